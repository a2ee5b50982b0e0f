"""Who is calling: users with roles, the platform's own credential, and their secret files.

Secrets are files in the secrets directory (``MXT_SECRETS_DIR``, by default
``DATA_DIR/secrets``; OpenFaaS mounts them at ``/var/openfaas/secrets``), never
environment variables:

- ``basic-auth-password``: the ``admin`` user's password (OpenFaaS's own secret, which
  ``faas-cli login`` uses);
- ``users``: further users, one ``name:role:scrypt$…`` line each (hashed with scrypt,
  ``mxt users add`` writes it); roles are ``scientist`` (reads), ``operator`` (submits,
  cancels, re-runs) and ``admin`` (everything, including deploying code);
- ``platform-token``: the service credential that the gateway, the queue worker, the
  connector and the orchestrator present to each other and to function replicas in the
  ``X-Mxt-Platform-Token`` header. Outsiders never hold it.

A secret that is missing where it is required, or empty, stops the process that
needs it (:class:`SecretError`) rather than leaving the door open. Every comparison is
constant-time; a password is verified once (scrypt, ~50 ms) and the outcome kept for
that exact header, so a logged-in client costs a dictionary look-up per request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

ADMIN_USER = "admin"
PASSWORD_FILE = "basic-auth-password"
USERS_FILE = "users"
PLATFORM_TOKEN_FILE = "platform-token"
#: the request header carrying the platform's credential (never forwarded from outside)
PLATFORM_HEADER = "X-Mxt-Platform-Token"
PLATFORM_HEADER_BYTES = PLATFORM_HEADER.lower().encode()
#: the ASGI scope key under which the admitted caller travels from the gateway's front
PRINCIPAL_KEY = "mxt.principal"
USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
#: scrypt cost: 2**14 x 8 x 1 is ~50 ms and 16 MiB per verification on this machine
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: verified Authorization headers remembered (positive and negative outcomes)
VERIFIED_KEPT = 1024


class SecretError(RuntimeError):
    """A required secret file is missing, empty or malformed (the process must not start)."""


class Role(IntEnum):
    """What a user may do; each role includes those below it."""

    ANONYMOUS = 0
    SCIENTIST = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text`` (``scientist``, ``operator``, ``admin``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls if r)
            raise ValueError(f"unknown role {text!r} (one of {names})") from None


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    ``platform`` is set for the platform's own components (the service credential);
    they may call internal functions, which no user may.
    """

    name: str
    role: Role
    platform: bool = False

    @property
    def authenticated(self) -> bool:
        """Whether the caller proved an identity."""
        return self.platform or self.role > Role.ANONYMOUS


ANONYMOUS = Principal("anonymous", Role.ANONYMOUS)
PLATFORM = Principal("platform", Role.ADMIN, platform=True)


# ---------------------------------------------------------------- secret files


def password_path(secrets_dir: Path) -> Path:
    """Path of the gateway's basic-auth password file (the admin's password)."""
    return secrets_dir / PASSWORD_FILE


def read_secret(secrets_dir: Path, name: str) -> str:
    """The content of a required secret file, stripped.

    Raises
    ------
    SecretError
        The file is missing or empty.
    """
    path = secrets_dir / name
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise SecretError(f"secret {path} is missing") from None
    except OSError as exc:
        raise SecretError(f"secret {path} cannot be read: {exc.strerror}") from None
    if not value:
        raise SecretError(f"secret {path} is empty: refusing to start without it")
    return value


def ensure_secret(secrets_dir: Path, name: str) -> tuple[Path, bool]:
    """Create secret ``name`` with 32 random URL-safe characters unless it exists.

    The directory is made ``0700`` and the file ``0600``. An existing file is kept
    as it is, even empty: the reader then refuses it (an operator's mistake must not
    be papered over with a new random secret).

    Returns
    -------
    path, created
        The file and whether it was created now.
    """
    path = secrets_dir / name
    if path.exists():
        return path, False
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(24))
    return path, True


def ensure_password(secrets_dir: Path) -> tuple[Path, bool]:
    """Create the admin password on first start; keep an existing one."""
    return ensure_secret(secrets_dir, PASSWORD_FILE)


def read_password(secrets_dir: Path) -> str:
    """The admin password; :class:`SecretError` when missing or empty."""
    return read_secret(secrets_dir, PASSWORD_FILE)


def read_platform_token(secrets_dir: Path) -> str:
    """The platform's service credential; :class:`SecretError` when missing or empty."""
    return read_secret(secrets_dir, PLATFORM_TOKEN_FILE)


def basic_auth_header(password: str, user: str = ADMIN_USER) -> str:
    """The ``Authorization`` header value for ``user:password``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def platform_headers(token: str) -> dict[str, str]:
    """The request header that presents the platform's credential."""
    return {PLATFORM_HEADER: token}


# ---------------------------------------------------------------- users file


def hash_password(password: str) -> str:
    """An scrypt hash of ``password``: ``scrypt$N$r$p$salt$hash`` (base64 parts)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    parts = (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${parts[0]}${parts[1]}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches an scrypt hash of :func:`hash_password` (constant-time)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class UserEntry:
    """One line of the users file."""

    name: str
    role: Role
    password_hash: str

    def line(self) -> str:
        """The line as written in the file."""
        return f"{self.name}:{self.role.name.lower()}:{self.password_hash}"


def parse_users(text: str, origin: str = USERS_FILE) -> dict[str, UserEntry]:
    """The users of a users file; ``#`` comments and blank lines are skipped.

    Raises
    ------
    SecretError
        A line is malformed (its number and the problem named).
    """
    users: dict[str, UserEntry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        problem = None
        if len(parts) != 3:
            problem = "expected name:role:hash"
        elif not USER_NAME.match(parts[0]):
            problem = f"bad user name {parts[0]!r}"
        elif not parts[2].startswith("scrypt$") or parts[2].count("$") != 5:
            problem = "the hash is not an scrypt hash (write users with `mxt users add`)"
        elif parts[0] in users or parts[0] == ADMIN_USER:
            problem = f"user {parts[0]!r} is defined twice (admin is basic-auth-password)"
        if problem is None:
            try:
                users[parts[0]] = UserEntry(parts[0], Role.parse(parts[1]), parts[2])
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            raise SecretError(f"{origin}, line {number}: {problem}")
    return users


def read_users(secrets_dir: Path) -> dict[str, UserEntry]:
    """The users of ``secrets_dir/users`` (none when the file is absent)."""
    path = secrets_dir / USERS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return parse_users(text, str(path))


def write_users(secrets_dir: Path, users: dict[str, UserEntry]) -> Path:
    """Replace the users file atomically (mode ``0600``)."""
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / USERS_FILE
    temporary = path.with_name(f".{USERS_FILE}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("# name:role:scrypt hash — written by `mxt users`\n")
        file.writelines(entry.line() + "\n" for entry in users.values())
    temporary.replace(path)
    return path


# ---------------------------------------------------------------- verification


class Authenticator:
    """Turns a request's credentials into a :class:`Principal`.

    Parameters
    ----------
    secrets_dir
        Where ``basic-auth-password``, ``users`` and ``platform-token`` are read.
        The admin password and the platform token are required.

    The users file is read again when its modification time changes (checked at most
    once a second), so ``mxt users add`` takes effect without a restart; a broken
    edit keeps the users already loaded.
    """

    def __init__(self, secrets_dir: Path) -> None:
        self.secrets_dir = secrets_dir
        self._admin = basic_auth_header(read_password(secrets_dir)).encode()
        self._platform = read_platform_token(secrets_dir).encode()
        self._users = read_users(secrets_dir)
        self._users_stamp = self._stamp()
        self._verified: OrderedDict[bytes, Principal | None] = OrderedDict()
        self._lock = threading.Lock()
        self.reload_error: str | None = None

    def _stamp(self) -> float | None:
        try:
            return (self.secrets_dir / USERS_FILE).stat().st_mtime
        except FileNotFoundError:
            return None

    def refresh(self) -> None:
        """Reload the users file if it changed (forgets every remembered verification)."""
        stamp = self._stamp()
        if stamp == self._users_stamp:
            return
        try:
            users = read_users(self.secrets_dir)
        except (SecretError, OSError) as exc:
            self.reload_error = str(exc)
            return
        with self._lock:
            self._users, self._users_stamp, self.reload_error = users, stamp, None
            self._verified.clear()

    def is_platform(self, token: bytes | str | None) -> bool:
        """Whether ``token`` is the platform's credential (constant-time)."""
        if not token:
            return False
        if isinstance(token, str):
            token = token.encode("latin-1", "replace")
        return hmac.compare_digest(token.strip(), self._platform)

    def cached(self, authorization: bytes) -> tuple[bool, Principal | None]:
        """``(known, principal)`` for a header verified before; no scrypt work."""
        key = hashlib.sha256(authorization).digest()
        with self._lock:
            if key in self._verified:
                self._verified.move_to_end(key)
                return True, self._verified[key]
        return False, None

    def verify(self, authorization: bytes) -> Principal | None:
        """The user an ``Authorization: Basic`` header proves, or ``None``.

        Costs one scrypt evaluation the first time a header is seen (call it off the
        event loop); the outcome is remembered for that exact header.
        """
        known, principal = self.cached(authorization)
        if known:
            return principal
        principal = self._check(authorization.strip())
        key = hashlib.sha256(authorization).digest()
        with self._lock:
            self._verified[key] = principal
            while len(self._verified) > VERIFIED_KEPT:
                self._verified.popitem(last=False)
        return principal

    def _check(self, authorization: bytes) -> Principal | None:
        if hmac.compare_digest(authorization, self._admin):
            return Principal(ADMIN_USER, Role.ADMIN)
        scheme, _, encoded = authorization.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        entry = self._users.get(user)
        if entry is None:
            # as long as a real check, so the time does not tell which users exist
            verify_password(password, _DUMMY_HASH)
            return None
        if not verify_password(password, entry.password_hash):
            return None
        return Principal(entry.name, entry.role)

    def allows(self, header: bytes | str | None) -> bool:
        """Whether ``header`` authenticates the admin (faas-cli's and the tests' check)."""
        if not header:
            return False
        if isinstance(header, str):
            header = header.encode("latin-1", "replace")
        return hmac.compare_digest(header.strip(), self._admin)


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + base64.b64encode(bytes(32)).decode()
