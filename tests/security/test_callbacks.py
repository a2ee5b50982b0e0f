"""Callbacks cannot be turned into server-side request forgery (``gateway/egress.py``).

Unit tests of the outbound-URL policy (address classes, numeric spellings, the
allow-list forms, IPv6, DNS judged at check and again at connect time), of the queue
worker's callback (no redirects, bounded time, answer and body), and end-to-end tests
sending what an attacker would send to real embedded stacks: one with the default
policy, one with ``MXT_CALLBACK_ALLOW=127.0.0.1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from bricks.errors import BadInput, Transient
from gateway import messages as m
from gateway import worker as worker_module
from gateway.egress import (
    EgressPolicy,
    EgressRefused,
    PolicyResolver,
    address_class,
    client_session,
    legacy_ipv4,
    parse_rule,
)
from gateway.settings import GatewaySettings
from gateway.worker import COMPLETION_BODY_LIMIT, Outcome, QueueWorker
from local.natsd import free_port
from local.stack import EmbeddedStack
from tests.gateway.conftest import STACK_ENV, function_entry, wait_call, wait_for, write_stack

# -- the policy: address classes -------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private (RFC 1918)"),
        ("172.16.5.4", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("169.254.169.254", "link-local (the cloud metadata service)"),
        ("169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "shared (carrier-grade NAT"),
        ("192.0.2.1", "special-purpose"),
        ("198.18.0.1", "special-purpose"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private (unique local"),
        ("fd12:3456::1", "private (unique local"),
        ("fd00:ec2::254", "private (the cloud metadata service)"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("::7f00:1", "reserved"),  # IPv4-compatible ::127.0.0.1
        ("100::1", "reserved"),
        ("2001:db8::1", "special-purpose"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:10.1.2.3", "IPv4-mapped private (RFC 1918)"),
        ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
        ("64:ff9b::7f00:1", "NAT64 loopback"),
        ("2002:a00:1::", "6to4 private (RFC 1918)"),
    ],
)
def test_non_public_address_classes(address: str, kind: str) -> None:
    found = address_class(ipaddress.ip_address(address))
    assert found is not None and found.startswith(kind), found


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_unicast_addresses(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None


# -- the policy: URLs ------------------------------------------------------------------

DEFAULT = EgressPolicy()


def refusal(policy: EgressPolicy, url: str) -> str:
    with pytest.raises(EgressRefused) as caught:
        policy.parse(url)
    assert isinstance(caught.value, BadInput) and caught.value.http_status == 400
    assert caught.value.detail == {"field": "X-Callback-Url"}
    assert caught.value.reason.startswith("header X-Callback-Url: ")
    return caught.value.reason


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:8080/", "127.0.0.1 is a loopback address"),
        ("http://127.0.0.1/", "loopback"),
        ("https://[::1]:8443/x", "::1 is a loopback address"),
        ("http://[::]/", "unspecified"),
        ("http://0.0.0.0:5432/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/", "private (RFC 1918)"),
        ("http://192.168.0.10:8222/varz", "private (RFC 1918)"),
        ("http://[fd00::1]/", "unique local"),
        ("http://[fe80::1%25eth0]/", "link-local (zone eth0)"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[::ffff:127.0.0.1]:4222/", "IPv4-mapped loopback"),
        ("http://[::ffff:7f00:1]/", "IPv4-mapped loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 link-local"),
    ],
)
def test_ip_literals_refused_with_their_class(url: str, words: str) -> None:
    reason = refusal(DEFAULT, url)
    assert words in reason and "MXT_CALLBACK_ALLOW" in reason


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),
    ],
)
def test_numeric_spellings_refused_even_when_the_address_is_listed(host: str, address: str) -> None:
    assert str(legacy_ipv4(host.lower())) == address
    for policy in (DEFAULT, EgressPolicy(["127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8"])):
        reason = refusal(policy, f"http://{host}:8080/")
        assert "non-canonical spelling" in reason and address in reason


@pytest.mark.parametrize("host", ["127.0.0.1", "example.org", "1.2.3.4.5", "08.1", "4294967296"])
def test_canonical_addresses_and_names_are_not_numeric_spellings(host: str) -> None:
    assert legacy_ipv4(host) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@8.8.8.8/",
        "http://user@8.8.8.8/",
        "http://@8.8.8.8/",
        "http://8.8.8.8@127.0.0.1/",
        "https://hooks.example.org:pw@8.8.8.8/",
    ],
)
def test_userinfo_refused(url: str) -> None:
    assert "user@host" in refusal(EgressPolicy(["127.0.0.1"]), url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:4222/",
        "http:///x",
        "http:8.8.8.8",
        "8.8.8.8",
        "http://8.8.8.8:0/",
        "http://8.8.8.8:99999/",
        "http://evil.example\\@127.0.0.1/",
        "http://8.8.8.8/\r\nX-Injected: 1",
        "http://8.8.8.8 /",
    ],
)
def test_malformed_or_foreign_urls_refused(url: str) -> None:
    refusal(DEFAULT, url)


def test_public_literals_and_at_signs_after_the_host_pass() -> None:
    for url in (
        "http://8.8.8.8/",
        "https://[2606:4700:4700::1111]:8443/hook",
        "http://[::ffff:8.8.8.8]/",
        "http://8.8.8.8/cb?to=a@b#x@y",
    ):
        assert DEFAULT.parse(url).address is not None


# -- the policy: the allow-list --------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000/"),
        ("127.0.0.1/32", "http://127.0.0.1:9000/"),
        ("127.0.0.0/8", "http://127.9.9.9/"),
        ("10.0.0.0/8", "http://10.20.30.40/"),
        ("192.168.1.0/24", "http://192.168.1.7/"),
        ("127.0.0.1:9000", "http://127.0.0.1:9000/"),
        ("127.0.0.1/32:9000", "http://127.0.0.1:9000/"),
        ("::1", "http://[::1]:9000/"),
        ("[::1]", "http://[::1]:9000/"),
        ("[::1]:9000", "http://[::1]:9000/"),
        ("fc00::/7", "http://[fd12::5]/"),
        ("[fd00::/8]:443", "https://[fd00::1]/"),
        ("127.0.0.1", "http://[::ffff:127.0.0.1]:9000/"),
        ("169.254.169.254", "http://169.254.169.254/"),
        (" 10.0.0.0/8 , 127.0.0.1 ", "http://127.0.0.1/"),
    ],
)
def test_allow_list_admits_listed_addresses(allow: str, url: str) -> None:
    assert EgressPolicy.from_setting(allow).parse(url).address is not None


@pytest.mark.parametrize(
    ("allow", "url", "words"),
    [
        ("127.0.0.1:9000", "http://127.0.0.1:9001/", "loopback"),
        ("127.0.0.1:80", "https://127.0.0.1/", "loopback"),  # default port 443
        ("[::1]:9000", "http://[::1]:9001/", "loopback"),
        ("127.0.0.1", "http://[::1]:9000/", "loopback"),
        ("::1", "http://127.0.0.1:9000/", "loopback"),
        ("10.0.0.0/8", "http://172.16.0.1/", "private"),
        ("127.0.0.1", "http://169.254.169.254/", "cloud metadata"),
        ("hooks.internal", "http://127.0.0.1/", "loopback"),
    ],
)
def test_allow_list_admits_nothing_else(allow: str, url: str, words: str) -> None:
    assert words in refusal(EgressPolicy.from_setting(allow), url)


@pytest.mark.parametrize(
    ("allow", "host", "port", "listed"),
    [
        ("hooks.internal", "hooks.internal", 80, True),
        ("Hooks.Internal.", "hooks.internal", 80, True),
        ("hooks.internal", "other.internal", 80, False),
        ("hooks.internal:8443", "hooks.internal", 8443, True),
        ("hooks.internal:8443", "hooks.internal", 443, False),
        ("*.internal", "a.internal", 80, True),
        ("*.internal", "a.b.internal", 80, True),
        ("*.internal", "internal", 80, False),
        ("*.internal", "evilinternal", 80, False),
        ("*.internal", "internal.evil.org", 80, False),
        ("*.internal:443", "a.internal", 443, True),
        ("*.internal:443", "a.internal", 80, False),
    ],
)
def test_allow_list_names_and_wildcards(allow: str, host: str, port: int, listed: bool) -> None:
    policy = EgressPolicy.from_setting(allow)
    target = policy.parse(f"http://{host}.:{port}/")  # a trailing dot changes nothing
    assert policy.name_allowed(target) is listed
    if listed:  # a listed name is trusted whatever it resolves to
        policy.judge(target, ["127.0.0.1", "10.0.0.1"])
    else:
        with pytest.raises(EgressRefused, match="resolves to a (loopback|private)"):
            policy.judge(target, ["127.0.0.1"])


@pytest.mark.parametrize(
    "pattern",
    [
        "10.0.0.0/33",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "127.0.0.1:http",
        "hooks.internal:",
        "[::1",
        "[::1]x",
        "*.",
        "*",
        "ex ample.org",
        "http://127.0.0.1",
        "2130706433",
        "0x7f.1",
        "a..b",
    ],
)
def test_malformed_allow_list_patterns_fail_loudly(pattern: str) -> None:
    with pytest.raises(ValueError, match="MXT_CALLBACK_ALLOW"):
        parse_rule(pattern)


def test_empty_allow_list_entries_are_ignored() -> None:
    assert EgressPolicy.from_setting("").rules == ()
    assert len(EgressPolicy.from_setting(",127.0.0.1,, ").rules) == 1


# -- the policy with DNS ---------------------------------------------------------------


def fake_getaddrinfo(answers: dict[str, list[str] | Exception]) -> Any:
    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        answer = answers[host]
        if isinstance(answer, Exception):
            raise answer
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in answer
        ]

    return getaddrinfo


async def test_check_resolves_names_and_judges_every_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(
        loop,
        "getaddrinfo",
        fake_getaddrinfo(
            {
                "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
                "mixed.example": ["93.184.216.34", "10.0.0.7"],
                "v6-loopback.example": ["93.184.216.34", "::1"],
                "mapped.example": ["::ffff:127.0.0.1"],
                "metadata.example": ["169.254.169.254"],
                "hooks.internal": ["10.0.0.7"],
                "gone.example": socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
                "flaky.example": socket.gaierror(socket.EAI_AGAIN, "Temporary failure"),
            }
        ),
    )
    policy = EgressPolicy(["hooks.internal"])
    assert await policy.check("https://public.example/cb") == "https://public.example/cb"
    assert await policy.check("http://hooks.internal:8080/") == "http://hooks.internal:8080/"
    for host, words in [
        ("mixed.example", "resolves to a private (RFC 1918) address"),
        ("v6-loopback.example", "resolves to a loopback address"),
        ("mapped.example", "resolves to an IPv4-mapped loopback address"),
        ("metadata.example", "cloud metadata"),
        ("gone.example", "does not resolve"),
    ]:
        with pytest.raises(EgressRefused) as caught:
            await policy.check(f"http://{host}/")
        assert words in caught.value.reason and host in caught.value.reason
        assert "10.0.0.7" not in caught.value.reason  # internal DNS is not told
    with pytest.raises(Transient):
        await policy.check("http://flaky.example/")


async def test_check_of_localhost_resolves_for_real() -> None:
    with pytest.raises(EgressRefused, match="'localhost' resolves to a loopback address"):
        await EgressPolicy().check("http://localhost:8080/")
    assert await EgressPolicy(["localhost"]).check("http://localhost:1/")


class Rebinding(AbstractResolver):
    """A resolver whose answer the test changes (DNS re-pointed after the check)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET6 if ":" in self.address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


class AsyncReceiver:
    """An aiohttp server on loopback recording what it receives."""

    def __init__(self, answer: Any = None) -> None:
        self.port = free_port()
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.answer = answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append((request.path, dict(request.headers), await request.read()))
        if self.answer is not None:
            return await self.answer(request)
        return web.Response(status=204)

    async def __aenter__(self) -> AsyncReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_connect_time_resolver_refuses_a_name_re_pointed_at_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        asyncio.get_running_loop(),
        "getaddrinfo",
        fake_getaddrinfo({"rebind.example": ["93.184.216.34"]}),
    )
    policy = EgressPolicy()
    async with AsyncReceiver() as receiver:
        url = f"http://rebind.example:{receiver.port}/cb"
        assert await policy.check(url) == url  # public when the call is enqueued
        dns = Rebinding("127.0.0.1")  # ... loopback when the worker connects
        async with client_session(policy, resolver=dns) as session:
            with pytest.raises(EgressRefused, match="resolves to a loopback address"):
                await session.post(url, data=b"stolen", allow_redirects=False)
            dns.address = "::ffff:127.0.0.1"
            with pytest.raises(EgressRefused, match="IPv4-mapped loopback"):
                await session.post(url.replace("/cb", "/again"), data=b"x")
        assert dns.asked == ["rebind.example", "rebind.example"]
        # with the address listed, the same resolver reaches the receiver
        allowed = EgressPolicy(["127.0.0.1"])
        async with (
            client_session(allowed, resolver=Rebinding("127.0.0.1")) as session,
            session.post(url, data=b"ok", allow_redirects=False) as resp,
        ):
            assert resp.status == 204
    assert [body for _, _, body in receiver.received] == [b"ok"]


async def test_policy_resolver_judges_what_the_inner_resolver_answers() -> None:
    resolver = PolicyResolver(EgressPolicy(), Rebinding("10.1.2.3"))
    with pytest.raises(EgressRefused, match="private"):
        await resolver.resolve("db.example", 5432)
    resolver = PolicyResolver(EgressPolicy(["10.0.0.0/8:5432"]), Rebinding("10.1.2.3"))
    assert (await resolver.resolve("db.example", 5432))[0]["host"] == "10.1.2.3"
    with pytest.raises(EgressRefused):
        await resolver.resolve("db.example", 5433)
    with pytest.raises(EgressRefused, match="non-canonical"):
        await resolver.resolve("0x7f.1", 80)


async def test_session_refuses_literals_the_resolver_never_sees() -> None:
    async with AsyncReceiver() as receiver:
        async with client_session(EgressPolicy()) as session:
            for url in (
                f"http://127.0.0.1:{receiver.port}/",
                f"http://[::ffff:127.0.0.1]:{receiver.port}/",
                f"http://0x7f.1:{receiver.port}/",
                f"http://localhost:{receiver.port}/",
            ):
                with pytest.raises(EgressRefused):
                    await session.post(url, data=b"x", allow_redirects=False)
        assert receiver.received == []


async def test_session_never_follows_redirects() -> None:
    async with AsyncReceiver() as inside:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{inside.port}/stolen")

        async with (
            AsyncReceiver(redirect) as outside,
            client_session(EgressPolicy(["127.0.0.1"])) as session,
        ):
            url = f"http://127.0.0.1:{outside.port}/cb"
            with pytest.raises(EgressRefused, match="redirects are not followed"):
                await session.post(url, data=b"x", allow_redirects=True)
            async with session.post(url, data=b"x", allow_redirects=False) as resp:
                assert resp.status == 307
    assert len(outside.received) == 2 and inside.received == []


# -- the worker's callback -------------------------------------------------------------


def make_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, allow: str = "127.0.0.1", timeout: float = 5
) -> QueueWorker:
    monkeypatch.setattr(worker_module, "CALLBACK_DELAYS", (0.0, 0.0, 0.0))
    settings = GatewaySettings(data_dir=tmp_path, callback_allow=allow, callback_timeout=timeout)
    return QueueWorker(settings, None, None, "secret")  # type: ignore[arg-type]


def a_call(url: str) -> m.AsyncCall:
    return m.AsyncCall(call_id="cb-test", function="echo", callback_url=url)


async def test_worker_callback_does_not_follow_redirects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    worker = make_worker(monkeypatch, tmp_path)
    async with AsyncReceiver() as inside:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"http://127.0.0.1:{inside.port}/stolen")

        async with AsyncReceiver(redirect) as outside:
            worker.callback_session = client_session(worker.callback_policy)
            try:
                ok = await worker.callback(
                    a_call(f"http://127.0.0.1:{outside.port}/cb"), Outcome(200, b"{}"), 1
                )
            finally:
                await worker.callback_session.close()
    assert ok is False
    assert len(outside.received) == 1  # a 3xx is a failure, not retried
    assert inside.received == []


async def test_worker_callback_refused_after_dns_change_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    worker = make_worker(monkeypatch, tmp_path, allow="")
    dns = Rebinding("127.0.0.1")
    async with AsyncReceiver() as receiver:
        worker.callback_session = client_session(worker.callback_policy, resolver=dns)
        try:
            ok = await worker.callback(
                a_call(f"http://hooks.example:{receiver.port}/cb"), Outcome(200, b"{}"), 1
            )
        finally:
            await worker.callback_session.close()
    assert ok is False and receiver.received == [] and dns.asked == ["hooks.example"]


async def test_worker_callback_is_bounded_in_time_answer_and_body(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    worker = make_worker(monkeypatch, tmp_path, timeout=1.0)

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=400)
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(10_000):
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.001)
        return resp

    release = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(status=204)

    big = b"y" * (COMPLETION_BODY_LIMIT + 1)
    async with AsyncReceiver(endless) as talker, AsyncReceiver(silent) as sleeper:
        worker.callback_session = client_session(worker.callback_policy)
        try:
            started = time.monotonic()
            assert not await worker.callback(
                a_call(f"http://127.0.0.1:{talker.port}/"), Outcome(200, big, "text/plain"), 1
            )
            assert time.monotonic() - started < 1.0  # 1 KiB of the answer read, not 640 MB
            started = time.monotonic()
            assert not await worker.callback(
                a_call(f"http://127.0.0.1:{sleeper.port}/"), Outcome(200, b"{}"), 1
            )
            # four attempts of callback_timeout (1 s) each, retried as timeouts
            assert 3.5 < time.monotonic() - started < 8
        finally:
            release.set()
            await worker.callback_session.close()
    (path, headers, body), *_ = talker.received
    assert body == b"" and headers["X-Function-Body-Truncated"] == "true"
    assert headers["X-Function-Body-Bytes"] == str(len(big))
    assert "text/plain" not in headers.get("Content-Type", "")
    assert len(sleeper.received) == 4


# -- end to end: what an attacker sends to a real stack --------------------------------


class Receiver:
    """A threaded HTTP server on loopback (IPv4 or IPv6) recording every request.

    ``redirect_to``: answer 302 with this ``Location`` instead of 204.
    """

    def __init__(self, host: str = "127.0.0.1", redirect_to: str | None = None) -> None:
        received = self.received = []
        lock = self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                with lock:
                    received.append(
                        (self.command, self.path, dict(self.headers), self.rfile.read(length))
                    )
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_any  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        self.server = server_class((host, 0), Handler)
        self.port = self.server.server_address[1]
        netloc = f"[{host}]" if ":" in host else host
        self.url = f"http://{netloc}:{self.port}/cb"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def start_stack(root: Path, env: dict[str, str]) -> EmbeddedStack:
    functions = {"echo": function_entry("echo", annotations={"com.mxt.access": "public"})}
    stack_file = write_stack(root / "stack.yml", functions)
    return EmbeddedStack(stack_file, root / "data", env=env)


DEFAULT_ENV = {k: v for k, v in STACK_ENV.items() if k != "MXT_CALLBACK_ALLOW"}


@pytest.fixture(scope="module")
def closed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A stack with the default policy: public addresses only."""
    with start_stack(tmp_path_factory.mktemp("callbacks-default"), DEFAULT_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A stack whose operator listed loopback for callbacks."""
    env = {**DEFAULT_ENV, "MXT_CALLBACK_ALLOW": "127.0.0.1"}
    with start_stack(tmp_path_factory.mktemp("callbacks-open"), env) as running:
        yield running


def attack(stack: EmbeddedStack, callback_url: str) -> httpx.Response:
    """An anonymous async call of a public function with a chosen callback."""
    return httpx.post(
        f"{stack.url}/async-function/echo",
        json={"message": "overwrite me"},
        headers={"X-Callback-Url": callback_url},
        timeout=30,
    )


def assert_refused(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["kind"] == "bad_input" and body["detail"] == {"field": "X-Callback-Url"}
    for word in words:
        assert word in body["reason"], body["reason"]
    assert "x-call-id" not in resp.headers  # nothing was queued


def settle(stack: EmbeddedStack) -> None:
    """Queue and finish a harmless call, so the worker has run whatever came before."""
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        call_id = http.post("/async-function/echo", json={"message": "x"}).headers["x-call-id"]
        wait_call(http, call_id, ("succeeded",))


def test_loopback_callbacks_refused_at_enqueue(
    closed_stack: EmbeddedStack, receiver: Receiver
) -> None:
    port = receiver.port
    replica = closed_stack.replica_urls("echo")[0]  # a function replica: no auth on loopback
    v6 = Receiver("::1")
    try:
        for url, words in [
            (receiver.url, ("127.0.0.1 is a loopback address",)),
            (f"http://127.0.0.1:{port}/", ("loopback",)),
            (replica, ("loopback",)),
            (v6.url, ("::1 is a loopback address",)),
            (f"http://[::1]:{port}/", ("loopback",)),
            (f"http://2130706433:{port}/", ("non-canonical spelling", "127.0.0.1")),
            (f"http://0x7f.1:{port}/", ("non-canonical spelling",)),
            (f"http://0177.0.0.1:{port}/", ("non-canonical spelling",)),
            (f"http://127.1:{port}/", ("non-canonical spelling",)),
            (f"http://[::ffff:127.0.0.1]:{port}/", ("IPv4-mapped loopback",)),
            (f"http://localhost:{port}/", ("'localhost' resolves to a loopback address",)),
            (f"http://0.0.0.0:{port}/", ("unspecified",)),
            ("http://169.254.169.254/latest/meta-data/", ("cloud metadata",)),
            ("http://[fd00:ec2::254]/latest/meta-data/", ("cloud metadata",)),
            ("http://10.0.0.1:5432/", ("private (RFC 1918)",)),
            (f"http://user:pw@127.0.0.1:{port}/", ("user@host",)),
            (f"gopher://127.0.0.1:{port}/", ("http(s) URL",)),
        ]:
            assert_refused(attack(closed_stack, url), *words)
        settle(closed_stack)
        assert receiver.received == [] and v6.received == []
    finally:
        v6.close()


def test_stack_healthy_after_the_attempts(closed_stack: EmbeddedStack) -> None:
    with httpx.Client(base_url=closed_stack.url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        resp = http.post("/function/echo", json={"message": "still here"})
        assert resp.status_code == 200 and resp.json()["message"] == "still here"


def test_listed_loopback_receiver_gets_the_callback(
    open_stack: EmbeddedStack, receiver: Receiver
) -> None:
    resp = attack(open_stack, receiver.url)
    assert resp.status_code == 202, resp.text
    call_id = resp.headers["x-call-id"]
    wait_for(lambda: receiver.received, timeout=30)
    method, path, headers, body = receiver.received[0]
    assert (method, path) == ("POST", "/cb")
    assert headers["X-Call-Id"] == call_id and headers["X-Function-Status"] == "200"
    assert b"overwrite me" in body


def test_redirect_from_a_listed_receiver_is_not_followed(
    open_stack: EmbeddedStack, receiver: Receiver
) -> None:
    bouncer = Receiver(redirect_to=receiver.url)  # 302 to another local port
    try:
        resp = attack(open_stack, bouncer.url)
        assert resp.status_code == 202, resp.text
        wait_for(lambda: bouncer.received, timeout=30)
        settle(open_stack)
        time.sleep(0.5)
        assert len(bouncer.received) == 1  # a 3xx fails the callback: neither retried
        assert receiver.received == []  # ... nor followed
    finally:
        bouncer.close()


def test_listing_loopback_admits_nothing_else(open_stack: EmbeddedStack, receiver: Receiver):
    port = receiver.port
    for url, words in [
        (f"http://[::1]:{port}/", ("::1 is a loopback address",)),
        (f"http://2130706433:{port}/", ("non-canonical spelling",)),
        ("http://169.254.169.254/", ("cloud metadata",)),
        ("http://192.168.1.1/", ("private",)),
        (f"http://user@127.0.0.1:{port}/", ("user@host",)),
    ]:
        assert_refused(attack(open_stack, url), *words)
    settle(open_stack)
    assert receiver.received == []
    with httpx.Client(base_url=open_stack.url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        assert http.post("/function/echo", json={"message": "ok"}).status_code == 200
