"""The bus takes credentials: nobody without them publishes on the stack's NATS.

End-to-end against a real embedded stack (its own nats-server, started by ``mxt up``
with the password of ``secrets/nats-password``): a client without credentials or with
a wrong password is refused with the server's "Authorization Violation" and cannot
forge a completion (``mxt.calls.completed.*``) or a raw arrival (``mxt.storage.raw``);
the right credentials connect; the stack stays healthy; no password is in the state
file, on a command line or in ``mxt status``. Unit tests of the connection factory
(``gateway.natsconn``) and of ``NatsServer(password=...)`` against real servers.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil
import pytest
from click.testing import CliRunner
from nats.errors import Error as NatsError

from gateway.natsconn import (
    NATS_PASSWORD_FILE,
    connect,
    credentials_for,
    ensure_nats_password,
    read_nats_password,
    url_with_credentials,
    url_without_credentials,
)
from local.natsd import CONFIG_FILE, NatsServer
from local.stack import STATE_FILE, EmbeddedStack
from tests.gateway.conftest import STACK_ENV, function_entry, write_stack
from tests.security.conftest import nats_by_hand

VIOLATION = "Authorization Violation"
FORGED = ["mxt.calls.completed.brick-notice", "mxt.storage.raw"]


async def _quiet(error: Exception) -> None:
    """An error callback that keeps refused attempts out of the test's log."""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _refused(url: str, **options: Any) -> str:
    """Connect once to ``url`` (no reconnect); the refusal's text (fails if accepted)."""
    try:
        nc = await nats.connect(url, allow_reconnect=False, error_cb=_quiet, **options)
    except NatsError as exc:
        return str(exc)
    await nc.close()
    raise AssertionError(f"{url_without_credentials(url)} accepted the connection")


def _raw_forge(host: str, port: int, connect: dict[str, Any]) -> bytes:
    """Speak the protocol by hand: CONNECT then, pipelined, PUBs of forged messages.

    What a hostile local process would send; the server's answer until it hangs up.
    """
    completion = b'{"call_id":"forged","function":"brick-notice","status":200}'
    lines = [b"CONNECT " + json.dumps(connect).encode()]
    for subject in FORGED:
        lines.append(f"PUB {subject} {len(completion)}".encode())
        lines.append(completion)
    lines.append(b"PING")
    return nats_by_hand(host, port, lines)


# -- the embedded stack -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A small stack of its own (its nats-server has a password), serving ``echo``."""
    root = tmp_path_factory.mktemp("bus-stack")
    functions = {"echo": function_entry("echo", annotations={"com.mxt.access": "public"})}
    stack_file = write_stack(root / "stack.yml", functions)
    with EmbeddedStack(stack_file, root / "data", env=STACK_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def bus_password(stack: EmbeddedStack) -> str:
    """The stack's bus password, from its secret file."""
    password = read_nats_password(stack.data_dir / "secrets")
    assert password is not None
    return password


def _plain(stack: EmbeddedStack) -> tuple[str, str, int]:
    """The stack's NATS URL without credentials, its host and port."""
    url = url_without_credentials(stack.nats_url)
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    return url, host, int(port)


async def test_without_credentials_nobody_connects_or_publishes(stack: EmbeddedStack) -> None:
    url, host, port = _plain(stack)
    # a watcher with the credentials sees whatever reaches the forged subjects
    watcher = await nats.connect(stack.nats_url)
    seen: list[str] = []

    async def record(msg: Any) -> None:
        seen.append(msg.subject)

    try:
        await watcher.subscribe("mxt.calls.completed.>", cb=record)
        await watcher.subscribe("mxt.storage.>", cb=record)
        await watcher.flush()
        assert VIOLATION in await _refused(url)
        # nats-py with no credentials at all, and the protocol spoken by hand
        answer = await asyncio.to_thread(_raw_forge, host, port, {"verbose": False})
        assert VIOLATION.encode() in answer and b"PONG" not in answer
        await asyncio.sleep(0.5)
        await watcher.flush()
        assert seen == []
    finally:
        await watcher.close()


async def test_a_wrong_password_is_refused(stack: EmbeddedStack, bus_password: str) -> None:
    url, host, port = _plain(stack)
    assert VIOLATION in await _refused(url_with_credentials(url, "not-" + bus_password))
    assert VIOLATION in await _refused(url_with_credentials(url, bus_password, user="admin"))
    assert VIOLATION in await _refused(url, user="mxt", password=bus_password[:-1])
    forged = {"verbose": False, "user": "mxt", "pass": bus_password + "x"}
    answer = await asyncio.to_thread(_raw_forge, host, port, forged)
    assert VIOLATION.encode() in answer and b"PONG" not in answer


async def test_the_credentials_connect(stack: EmbeddedStack, bus_password: str) -> None:
    url, _, _ = _plain(stack)
    assert stack.nats_url == url_with_credentials(url, bus_password)
    nc = await nats.connect(stack.nats_url, allow_reconnect=False)
    try:
        info = await nc.jetstream().stream_info("MXT_CALLS")
        assert info.config.name == "MXT_CALLS"
    finally:
        await nc.close()
    # the factory finds the password in the stack's secrets directory
    nc = await connect(url, secrets_dir=stack.data_dir / "secrets", allow_reconnect=False)
    try:
        assert nc.is_connected
    finally:
        await nc.close()


def test_the_stack_is_healthy_after_refused_attempts(stack: EmbeddedStack) -> None:
    url, host, port = _plain(stack)
    for _ in range(20):
        assert VIOLATION in asyncio.run(_refused(url))
        _raw_forge(host, port, {"verbose": False})
    assert stack.healthy()
    resp = httpx.post(stack.url + "/function/echo", json={"message": "still here"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["message"] == "still here"


def test_no_password_in_the_state_file_ps_or_status(
    stack: EmbeddedStack, bus_password: str
) -> None:
    from local.cli_platform import status

    secrets_dir = stack.data_dir / "secrets"
    state = (stack.data_dir / STATE_FILE).read_text()
    assert bus_password not in state
    assert "@" not in json.loads(state)["nats_url"]
    assert _mode(secrets_dir) == 0o700
    assert _mode(secrets_dir / NATS_PASSWORD_FILE) == 0o600
    config = secrets_dir / CONFIG_FILE
    assert _mode(config) == 0o600
    text = config.read_text()
    assert bus_password in text and "max_payload" in text and "max_connections" in text
    # the server's command line (what ps shows) names the file, never the password
    assert stack.process is not None
    servers = [
        p.cmdline()
        for p in psutil.Process(stack.process.pid).children(recursive=True)
        if "nats-server" in p.name()
    ]
    assert len(servers) == 1 and str(config) in servers[0]
    assert all(bus_password not in arg for arg in servers[0])
    shown = CliRunner().invoke(status, ["--data-dir", str(stack.data_dir)])
    assert shown.exit_code == 0, shown.output
    assert "nats " in shown.output and bus_password not in shown.output


# -- the factory and the server, unit by unit ------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with a password, its configuration in a secrets directory."""
    root = tmp_path_factory.mktemp("locked-nats")
    secrets_dir = root / "secrets"
    password = ensure_nats_password(secrets_dir)
    with NatsServer(root / "nats", password=password, config_dir=secrets_dir) as server:
        yield server


def _secrets(tmp_path: Path, content: str | None) -> Path:
    """A secrets directory whose ``nats-password`` holds ``content`` (absent if None)."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(parents=True)
    if content is not None:
        (secrets_dir / NATS_PASSWORD_FILE).write_text(content)
    return secrets_dir


async def test_the_factory_refuses_an_empty_secret(locked: NatsServer, tmp_path: Path) -> None:
    for empty in ("", "\n  \n"):
        secrets_dir = _secrets(tmp_path / str(len(empty)), empty)
        with pytest.raises(ValueError, match=NATS_PASSWORD_FILE):
            await connect(locked.url, secrets_dir=secrets_dir, allow_reconnect=False)


async def test_the_factory_uses_the_secret_file(locked: NatsServer, tmp_path: Path) -> None:
    assert locked.config_dir is not None and locked.password is not None
    nc = await connect(locked.url, secrets_dir=locked.config_dir, allow_reconnect=False)
    try:
        assert nc.is_connected
        assert nc.max_payload == 8 * 1024 * 1024  # the limit of the configuration
    finally:
        await nc.close()
    # the file as an editor leaves it (trailing newline) is the same password
    edited = _secrets(tmp_path, locked.password + "\n")
    nc = await connect(locked.url, secrets_dir=edited, allow_reconnect=False)
    await nc.close()


async def test_without_a_secret_file_the_factory_sends_none(
    locked: NatsServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    secrets_dir = _secrets(tmp_path, None)
    assert credentials_for(locked.url, secrets_dir) == {}
    with pytest.raises(NatsError, match=VIOLATION):
        await connect(locked.url, secrets_dir=secrets_dir, allow_reconnect=False, error_cb=_quiet)
    # a server run by someone else, without auth: connects as before
    nc = await connect(nats_server.url, secrets_dir=secrets_dir, allow_reconnect=False)
    await nc.close()


async def test_userinfo_in_the_url_wins(locked: NatsServer, tmp_path: Path) -> None:
    assert locked.password is not None
    wrong_file = _secrets(tmp_path / "wrong", "wrong-password")
    right_url = url_with_credentials(locked.url, locked.password)
    nc = await connect(right_url, secrets_dir=wrong_file, allow_reconnect=False)
    await nc.close()
    # and an empty file is not even read when the URL has the credentials
    empty_file = _secrets(tmp_path / "empty", "")
    nc = await connect(right_url, secrets_dir=empty_file, allow_reconnect=False)
    await nc.close()
    right_file = _secrets(tmp_path / "right", locked.password)
    wrong_url = url_with_credentials(locked.url, "wrong-password")
    with pytest.raises(NatsError, match=VIOLATION):
        await connect(wrong_url, secrets_dir=right_file, allow_reconnect=False, error_cb=_quiet)


async def test_odd_characters_survive_config_and_url(tmp_path: Path) -> None:
    password = 'p@ss:w/rd%20"quote\\$HOME#x'
    with NatsServer(tmp_path / "nats", password=password) as server:
        assert server.config_path.parent == tmp_path / "nats"
        url = url_with_credentials(server.url, password)
        assert url_without_credentials(url) == server.url
        nc = await connect(url, secrets_dir=tmp_path / "none", allow_reconnect=False)
        await nc.close()
        assert VIOLATION in await _refused(server.url, user="mxt", password="p@ss")


def test_ensure_nats_password(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    password = ensure_nats_password(secrets_dir)
    assert len(password) == 32 and password.replace("-", "").replace("_", "").isalnum()
    assert _mode(secrets_dir) == 0o700
    assert _mode(secrets_dir / NATS_PASSWORD_FILE) == 0o600
    assert ensure_nats_password(secrets_dir) == password  # kept
    # a looser file (copied by hand) is tightened; an empty one is refused
    (secrets_dir / NATS_PASSWORD_FILE).chmod(0o644)
    assert ensure_nats_password(secrets_dir) == password
    assert _mode(secrets_dir / NATS_PASSWORD_FILE) == 0o600
    (secrets_dir / NATS_PASSWORD_FILE).write_text("")
    with pytest.raises(ValueError, match=NATS_PASSWORD_FILE):
        ensure_nats_password(secrets_dir)


def test_a_server_with_a_password_keeps_it_off_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        NatsServer(tmp_path / "nats", password="")
    with NatsServer(tmp_path / "nats", password="s3cret-word") as server:
        assert server.process is not None
        cmdline = psutil.Process(server.process.pid).cmdline()
        assert not any("s3cret-word" in arg for arg in cmdline)
        assert str(server.store_dir) in cmdline  # what stop_stale_nats looks for
        assert _mode(server.config_path) == 0o600
    # without a password: flags, no configuration file, as before
    with NatsServer(tmp_path / "open") as server:
        assert server.process is not None
        assert "-c" not in psutil.Process(server.process.pid).cmdline()
        assert not server.config_path.exists()
