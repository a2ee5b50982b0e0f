"""Where the gateway may send requests of its own: the outbound-URL policy of callbacks.

An async call's ``X-Callback-Url`` is chosen by whoever calls the gateway, and the
queue worker POSTs the function's answer there. Without a policy that is a
server-side request forgery: function replicas listen on loopback without auth, and
the machine's own services (PostgreSQL, NATS monitoring, cloud metadata at
169.254.169.254) are one hop away. A URL is therefore allowed only when

- its scheme is ``http`` or ``https``, it has a host and no userinfo (``user@``), and
  its host is not a non-canonical numeric IPv4 spelling (``2130706433``, ``0x7f.1``,
  ``0177.0.0.1``, ``127.1``: never needed, and parsed differently by different
  layers, so always refused; a listed address is reached by its dotted quad), and
- every address its host is or resolves to is a public unicast address, or the host
  name or each address matches the allow-list ``MXT_CALLBACK_ALLOW``.

The allow-list is comma-separated patterns, each optionally followed by ``:port``
(IPv6 in brackets then: ``[::1]:8080``, ``[fd00::/8]:443``): a host name
(``hooks.example.org``, case-insensitive, trailing dot ignored), a wildcard
``*.example.org`` (any name below example.org, not example.org itself), an IP
address (``127.0.0.1``, ``::1``) or a CIDR block (``10.0.0.0/8``, ``fc00::/7``). A
listed name is trusted whatever it resolves to; an address pattern allows that
address whatever name led to it.

The policy is applied twice: :meth:`EgressPolicy.check` when the call is enqueued
(400 with the reason), and when the worker connects (DNS may change in between):
:func:`client_session` makes an aiohttp session whose resolver judges every
resolved address with the same policy, and which refuses a URL the policy refuses
before any connection (aiohttp does not resolve IP literals, so the resolver alone
would not see them). That session follows no redirect (the worker asks for none:
a 3xx is a failed callback).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bricks.errors import BadInput, Transient

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT = 5.0  # seconds a host name may take to resolve at enqueue time
DEFAULT_FIELD = "X-Callback-Url"
SETTING = "MXT_CALLBACK_ALLOW"

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNSPECIFIED_V4 = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NUMERIC_PART = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# characters no callback URL needs and URL parsers disagree on
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")


class EgressRefused(BadInput):
    """A URL the outbound policy refuses; 400 at enqueue, a failed callback later.

    The reason names the host and the address class (loopback, private, ...).
    """


def address_class(address: IPAddress) -> str | None:
    """The class of an address that makes it non-public, or ``None`` for public unicast.

    IPv4-mapped (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::/96``) and 6to4
    (``2002::/16``) IPv6 addresses are judged by the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        return _ipv6_class(address)
    if address in _UNSPECIFIED_V4:
        return "unspecified (0.0.0.0/8)"
    if address.is_loopback:
        return "loopback"
    if address in _METADATA:
        return "link-local (the cloud metadata service)"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if any(address in net for net in _RFC1918):
        return "private (RFC 1918)"
    if address in _SHARED:
        return "shared (carrier-grade NAT, 100.64.0.0/10)"
    if not address.is_global:
        return "special-purpose (not globally routable)"
    return None


def _ipv6_class(address: ipaddress.IPv6Address) -> str | None:
    embedded = [
        ("IPv4-mapped", address.ipv4_mapped),
        ("NAT64", _nat64(address)),
        ("6to4", address.sixtofour),
    ]
    for kind, v4 in embedded:
        if v4 is not None:
            inner = address_class(v4)
            return None if inner is None else f"{kind} {inner}"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address in _METADATA:
        return "private (the cloud metadata service)"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in _UNIQUE_LOCAL:
        return "private (unique local, fc00::/7)"
    if address in _SITE_LOCAL:
        return "site-local (deprecated, fec0::/10)"
    if address in _IPV4_COMPATIBLE or address not in _GLOBAL_UNICAST_V6 or address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "special-purpose (not globally routable)"
    return None


def _nat64(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address not in _NAT64:
        return None
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a non-canonical numeric IPv4 spelling stands for, else ``None``.

    ``inet_aton`` (and so ``getaddrinfo``) reads ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1`` and ``127.1`` as 127.0.0.1; a canonical dotted quad or a name gives
    ``None``.
    """
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.fullmatch(p) for p in parts):
        return None
    try:
        *leading, last = (_inet_aton_number(p) for p in parts)
    except ValueError:  # 08, 09: not octal, and getaddrinfo refuses them too
        return None
    if any(v > 255 for v in leading) or last >= 256 ** (4 - len(leading)):
        return None
    number = last
    for i, value in enumerate(leading):
        number |= value << (8 * (3 - i))
    address = ipaddress.IPv4Address(number)
    return None if str(address) == host else address


def _inet_aton_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    return int(part, 8 if part.startswith("0") else 10)


@dataclass(frozen=True)
class Rule:
    """One allow-list pattern: a name, a ``*.`` suffix or a network, and maybe a port."""

    pattern: str
    name: str | None = None
    suffix: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches_name(self, host: str, port: int) -> bool:
        """Whether the host name (lower case, no trailing dot) and port match."""
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return host == self.name
        return self.suffix is not None and host.endswith(self.suffix)

    def matches_address(self, address: IPAddress, port: int) -> bool:
        """Whether the address and port match."""
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return _unmapped(address) in self.network


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_rule(pattern: str) -> Rule:
    """One allow-list pattern; :class:`ValueError` naming it when malformed."""
    text, port = pattern.strip(), None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{SETTING}: malformed pattern {pattern!r}")
        text, port = inside, _port(rest[1:], pattern) if rest else None
    elif text.count(":") == 1:
        text, _, tail = text.partition(":")
        port = _port(tail, pattern)
    if not text:
        raise ValueError(f"{SETTING}: empty pattern in {pattern!r}")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        network = None
    if network is not None:
        return Rule(pattern, network=network, port=port)
    if legacy_ipv4(text) is not None:
        raise ValueError(f"{SETTING}: {pattern!r} is not a dotted-quad IPv4 address")
    name = text.lower().removesuffix(".")
    if name.startswith("*."):
        if not _HOST_NAME.fullmatch(name[2:]):
            raise ValueError(f"{SETTING}: malformed wildcard {pattern!r}")
        return Rule(pattern, suffix=name[1:], port=port)
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"{SETTING}: malformed pattern {pattern!r}")
    return Rule(pattern, name=name, port=port)


def _port(text: str, pattern: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{SETTING}: bad port in {pattern!r}")
    return int(text)


@dataclass(frozen=True)
class Target:
    """A URL the policy parsed: host (lower case, IPv6 without brackets) and port."""

    url: URL | None
    host: str
    port: int
    address: IPAddress | None  # the host when it is an IP literal


class EgressPolicy:
    """The outbound-URL policy: public unicast addresses, plus an allow-list.

    Parameters
    ----------
    allow
        Allow-list patterns (see the module docstring); ``from_setting`` reads the
        comma-separated form of ``MXT_CALLBACK_ALLOW``.
    field
        The request field the refusals name (``X-Callback-Url``).
    """

    def __init__(self, allow: Iterable[str] = (), field: str = DEFAULT_FIELD) -> None:
        self.rules = tuple(parse_rule(p) for p in allow if p.strip())
        self.field = field

    @classmethod
    def from_setting(cls, value: str, field: str = DEFAULT_FIELD) -> EgressPolicy:
        """The policy of a comma-separated allow-list (``""``: public addresses only)."""
        return cls(value.split(","), field)

    def refuse(self, reason: str) -> EgressRefused:
        """The error for a refused URL, naming the field."""
        return EgressRefused(f"header {self.field}: {reason}", field=self.field)

    def parse(self, url: str) -> Target:
        """Check what the URL alone decides (no DNS); its target, or :class:`EgressRefused`.

        Judges scheme, host, userinfo, numeric spellings and, for an IP literal,
        the address itself; a host name is judged by :meth:`judge` once resolved.
        """
        if _UNSAFE_CHARACTERS.search(url):
            raise self.refuse("the URL contains spaces, control characters or '\\'")
        try:
            parsed = URL(url)
            port = parsed.port
        except ValueError as exc:
            raise self.refuse(f"{url!r} is not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise self.refuse(f"must be an http(s) URL with a host, not {url!r}")
        authority = url.partition("//")[2]
        if "@" in re.split(r"[/?#]", authority, maxsplit=1)[0]:
            raise self.refuse("user names and passwords (user@host) are not allowed in the URL")
        if not port:
            raise self.refuse(f"port {port} is not allowed")
        return self.target((parsed.host or "").lower(), port, parsed)

    def target(self, host: str, port: int, url: URL | None = None) -> Target:
        """Judge a host by its spelling (a refused IP literal, a numeric spelling).

        ``host`` is lower case, an IPv6 address without brackets; a host name passes
        (its addresses are judged by :meth:`judge` once resolved).
        """
        spelled = legacy_ipv4(host)
        if spelled is not None:
            raise self.refuse(
                f"host {host!r} is a non-canonical spelling of the IPv4 address {spelled} "
                f"({address_class(spelled) or 'public'}); write addresses as dotted quads"
            )
        try:
            address: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        target = Target(url, host.removesuffix("."), port, address)
        if address is not None:
            problem = self.address_problem(target, address)
            if problem:
                raise self.refuse(f"{address} is {problem}")
        return target

    def name_allowed(self, target: Target) -> bool:
        """Whether the target's host name is listed (then its addresses are not judged)."""
        return target.address is None and any(
            r.matches_name(target.host, target.port) for r in self.rules
        )

    def address_problem(self, target: Target, address: IPAddress) -> str | None:
        """Why the target may not reach ``address`` (``"a loopback address"``), or ``None``."""
        kind = address_class(address)
        if kind is None or any(r.matches_address(address, target.port) for r in self.rules):
            return None
        if address.version == 6 and address.scope_id:
            kind += f" (zone {address.scope_id})"
        article = "an" if kind[0] in "aeiouIU" else "a"
        return f"{article} {kind} address, not allowed unless listed in {SETTING}"

    def judge(self, target: Target, addresses: Sequence[str]) -> None:
        """Refuse unless every resolved address may be reached (or the name is listed)."""
        if self.name_allowed(target):
            return
        if not addresses:
            raise self.refuse(f"host {target.host!r} resolves to no address")
        for text in addresses:
            problem = self.address_problem(target, ipaddress.ip_address(text))
            if problem:
                # the address itself is not told: the caller would learn internal DNS
                raise self.refuse(f"host {target.host!r} resolves to {problem}")

    async def check(self, url: str, timeout: float = RESOLVE_TIMEOUT) -> str:
        """The URL when the policy allows it now (resolving its host), else an error.

        Raises
        ------
        EgressRefused
            The URL, its host or one of the host's addresses is refused.
        bricks.errors.Transient
            The host could not be resolved in ``timeout`` seconds, or DNS failed
            temporarily.
        """
        target = self.parse(url)
        if target.address is not None or self.name_allowed(target):
            return url
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise Transient(
                f"header {self.field}: host {target.host!r} did not resolve in {timeout:g} s",
                retry_after=timeout,
            ) from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise Transient(
                    f"header {self.field}: resolving {target.host!r} failed for now: {exc}",
                    retry_after=1.0,
                ) from None
            raise self.refuse(f"host {target.host!r} does not resolve ({exc})") from None
        self.judge(target, [_sockaddr_host(info[4]) for info in infos])
        return url


def _sockaddr_host(sockaddr: tuple[Any, ...]) -> str:
    host = str(sockaddr[0])
    return host.split("%", 1)[0]


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that refuses hosts the policy refuses, after resolving them.

    Every address the host resolves to is judged (as at enqueue time): one refused
    address refuses the host, so a name re-pointed at 127.0.0.1 after the check fails.

    Parameters
    ----------
    resolver
        The resolver doing the lookups (aiohttp's default when omitted).
    """

    def __init__(self, policy: EgressPolicy, resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and judge the addresses; :class:`EgressRefused` if refused."""
        target = self.policy.target(host.lower(), port)
        results = await self.resolver.resolve(host, port, family)
        self.policy.judge(target, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self.resolver.close()


def _trace_config(policy: EgressPolicy) -> aiohttp.TraceConfig:
    """Refuses, before any connection, a URL the policy refuses, and every redirect."""

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        policy.parse(str(params.url))

    async def on_request_redirect(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestRedirectParams,
    ) -> None:
        location = params.response.headers.get("Location", "")
        raise policy.refuse(
            f"redirects are not followed (HTTP {params.response.status} to {location!r})"
        )

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    trace.on_request_redirect.append(on_request_redirect)
    return trace


def client_session(
    policy: EgressPolicy,
    resolver: AbstractResolver | None = None,
    connector_options: dict[str, Any] | None = None,
    **session_options: Any,
) -> aiohttp.ClientSession:
    """An aiohttp session that only reaches what ``policy`` allows.

    URLs are judged before each request (scheme, userinfo, spellings, IP literals) and
    host names again when the connector resolves them (with ``resolver``, aiohttp's
    default when omitted). A redirect is refused even with ``allow_redirects=True``
    (pass ``False`` to get the 3xx answer instead); environment proxies are not used
    and no cookies are kept (the receivers of different callers share the session).
    """
    connector = aiohttp.TCPConnector(
        resolver=PolicyResolver(policy, resolver), **(connector_options or {})
    )
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=[_trace_config(policy)],
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        **session_options,
    )
