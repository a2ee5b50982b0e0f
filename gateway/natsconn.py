"""The one way the project connects to NATS: credentials and reconnect policy in one place.

Every connection (gateway, queue worker, connector, orchestrator, websocket hub,
storage events) goes through :func:`connect`, which

- adds the bus credentials: user ``mxt`` and the password in the secret file
  ``nats-password`` of the secrets directory (``MXT_SECRETS_DIR``, else
  ``$MXT_DATA_DIR/secrets``). Credentials in the URL's userinfo
  (``nats://user:password@host:port``) win. A missing file means a NATS server run by
  someone else, without credentials; an empty file is refused (``ValueError``), never
  taken as "connect anonymously";
- applies the project's reconnect policy: reconnect forever, every half second, with a
  one-line error callback (not nats-py's traceback per attempt; the same error at most
  once per 30 s per process, with a count) and one line per disconnect and reconnect.
  A call site passes its own options (``connect_timeout``, ``allow_reconnect=False``,
  ...) as keywords.

``mxt up`` makes the secret with :func:`ensure_nats_password` and starts its
nats-server with it (``local.natsd.NatsServer(password=...)``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger("mxt.nats")

#: The user name every component of the project connects as.
NATS_USER = "mxt"
#: The secret file holding the bus password, in the secrets directory.
NATS_PASSWORD_FILE = "nats-password"


#: Seconds during which the same error is not logged again (counted instead).
REPORT_EVERY = 30.0
_reported: dict[str, tuple[float, int]] = {}  # error text -> (last logged, not logged since)
_clock = time.monotonic


async def report_nats_error(error: Exception) -> None:
    """Error callback: one warning line, not nats-py's traceback per reconnect attempt.

    The same error again within :data:`REPORT_EVERY` seconds in this process (every
    connection retrying every half second while the server is down) is counted, and the
    count shown with its next line.
    """
    text = f"{type(error).__name__}: {error}"
    now = _clock()
    last, hidden = _reported.get(text, (None, 0))
    if last is not None and now - last < REPORT_EVERY:
        _reported[text] = (last, hidden + 1)
        return
    if len(_reported) > 256:  # bounded, whatever the errors' texts
        _reported.clear()
    _reported[text] = (now, 0)
    more = f" (and {hidden} times since)" if hidden else ""
    log.warning("NATS: %s%s", text, more)


async def report_disconnected() -> None:
    """Disconnected callback: one line per connection lost."""
    log.warning("NATS: disconnected")


async def report_reconnected() -> None:
    """Reconnected callback: one line per connection back."""
    log.warning("NATS: reconnected")


#: The project's reconnect policy; a call site's keywords override each entry.
DEFAULT_OPTIONS: dict[str, Any] = {
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 0.5,
    "error_cb": report_nats_error,
    "disconnected_cb": report_disconnected,
    "reconnected_cb": report_reconnected,
}


def default_secrets_dir() -> Path:
    """The secrets directory as ``storage.settings`` resolves it.

    ``MXT_SECRETS_DIR``, else ``$MXT_DATA_DIR/secrets``, else the per-user data
    directory's ``secrets``.
    """
    from storage.settings import default_data_dir

    explicit = os.environ.get("MXT_SECRETS_DIR")
    if explicit:
        return Path(explicit)
    data_dir = os.environ.get("MXT_DATA_DIR")
    return (Path(data_dir) if data_dir else default_data_dir()) / "secrets"


def nats_password_path(secrets_dir: Path) -> Path:
    """Path of the bus password file in ``secrets_dir``."""
    return Path(secrets_dir) / NATS_PASSWORD_FILE


def read_nats_password(secrets_dir: Path | None = None) -> str | None:
    """The bus password, or ``None`` when the secret file does not exist.

    Parameters
    ----------
    secrets_dir
        The secrets directory; :func:`default_secrets_dir` when omitted.

    Raises
    ------
    ValueError
        The file exists but is empty (or only whitespace): a secret was meant, so
        connecting without one would be wrong.
    """
    path = nats_password_path(secrets_dir if secrets_dir is not None else default_secrets_dir())
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not password:
        raise ValueError(f"the NATS password file {path} is empty")
    return password


def ensure_nats_password(secrets_dir: Path) -> str:
    """The bus password in ``secrets_dir``, created on first use; kept afterwards.

    A new one is 32 random URL-safe characters, written to a file of mode 0600 in a
    directory of mode 0700 (both tightened if looser). To rotate it, replace the file
    and restart the stack.

    Raises
    ------
    ValueError
        An existing password file is empty.
    """
    secrets_dir = Path(secrets_dir)
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(secrets_dir.stat().st_mode) & 0o077:
        secrets_dir.chmod(0o700)
    path = nats_password_path(secrets_dir)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))  # 24 bytes: 32 characters
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    password = read_nats_password(secrets_dir)
    if password is None:  # removed between the write and the read
        raise FileNotFoundError(f"the NATS password file {path} vanished")
    return password


def url_without_credentials(url: str) -> str:
    """``url`` without its userinfo: what may be shown, logged or written to a state file."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_with_credentials(url: str, password: str, user: str = NATS_USER) -> str:
    """``url`` with ``user:password@`` as userinfo (percent-escaped; replaces any)."""
    parts = urlsplit(url_without_credentials(url))
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def credentials_for(url: str, secrets_dir: Path | None = None) -> dict[str, str]:
    """The ``user``/``password`` options to connect to ``url`` with (empty: none).

    Userinfo in the URL wins (percent-escapes decoded; a user name alone is a token
    and is left to nats-py); otherwise the secret file, if it exists.
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        if parts.username is not None and parts.password is not None:
            return {"user": unquote(parts.username), "password": unquote(parts.password)}
        return {}
    password = read_nats_password(secrets_dir)
    if password is None:
        return {}
    return {"user": NATS_USER, "password": password}


async def connect(url: str, *, secrets_dir: Path | None = None, **options: Any) -> Client:
    """Connect to NATS at ``url`` with the bus credentials and the reconnect policy.

    Parameters
    ----------
    url
        The server, ``nats://[user:password@]host:port``.
    secrets_dir
        Where ``nats-password`` is; :func:`default_secrets_dir` when omitted.
    **options
        ``nats.connect`` keywords; they override :data:`DEFAULT_OPTIONS` (reconnect
        forever every 0.5 s, one-line error, disconnect and reconnect callbacks).
        Credentials given here (``user``/``password``, ``token``, ...) replace those of
        the URL and the file.

    Raises
    ------
    ValueError
        The password file exists but is empty.
    """
    import nats

    given = {"user", "password", "token", "user_credentials", "nkeys_seed"} & options.keys()
    credentials = {} if given else credentials_for(url, secrets_dir)
    merged: dict[str, Any] = {**DEFAULT_OPTIONS, **credentials, **options}
    return await nats.connect(url, **merged)
