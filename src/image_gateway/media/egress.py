"""Egress policy for URLs a caller supplies (reference images, webhooks): no request forgery.

The gateway may fetch a caller's URL, or POST a signed webhook to it, from inside the operator's
network. Such a URL may only reach a public address: http(s) only, and the host refused when any
address it names or resolves to is loopback, private, link-local (169.254.169.254...), CGNAT,
multicast, reserved or unspecified, including IPv4-mapped / 6to4 / NAT64 forms and the legacy IPv4
spellings `inet_aton` accepts (`2130706433`, `127.1`, `0x7f.1`). The operator allows internal hosts
with PRIVATE_URL_ALLOWLIST (IPs, CIDRs, host names). Upstream base URLs are not subject to it.

Applied twice: at the API boundary (`check`, DNS through loop.getaddrinfo), and at connect time by
`GuardedResolver` on the sessions that carry caller URLs. The resolver hands aiohttp only the
addresses it checked, so the connection goes to a checked address (a rebinding DNS answer between
the two checks is caught by the second). IP literals never reach a resolver: `screen` checks them
before each request and each redirect hop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from ..errors import InvalidRequest
from .session import new_session

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_REDIRECTS = 3
DNS_TIMEOUT_S = 5.0
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # is_private is False for it; is_global too
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4ISH = re.compile(r"[0-9a-fA-FxX.]+")  # what inet_aton may read as an address (hex, octal, short)
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
HINT = "set PRIVATE_URL_ALLOWLIST on the gateway to allow an internal host"


class EgressRefused(OSError):
    """A caller URL the policy refuses. An OSError so that, raised in a resolver, aiohttp wraps it
    (ClientConnectorDNSError.os_error) instead of turning it into something else."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _category(ip: IPAddress) -> str | None:
    """Why this address is not public, or None. Checked in this order so the name is the useful one."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:  # documentation, benchmarking, protocol assignments...
        return "non-public"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 address stands for (is_global says True for 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells, as the socket layer would read it, or None for a name.
    Raises EgressRefused for a host that looks like an IPv6 literal but is not one."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise EgressRefused("its host is not a valid IPv6 address") from None
    if _IPV4ISH.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _loopback_name(host: str) -> bool:
    """`localhost` and `*.localhost` are loopback by definition (RFC 6761), whatever DNS says or fails to."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _ip_of(sockaddr_host: str) -> IPAddress:
    return ipaddress.ip_address(sockaddr_host.split("%", 1)[0])


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What a caller URL may reach: public addresses, plus the operator's allowlist."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> EgressPolicy:
        """Entries are IPs, CIDRs or host names. Raises ValueError naming a bad entry."""
        nets: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not _HOSTNAME.fullmatch(name):
                raise ValueError(f"{entry!r} is not an IP address, a CIDR or a host name")
            hosts.add(name)
        return cls(tuple(nets), frozenset(hosts))

    def host_allowed(self, host: str) -> bool:
        return bool(self.hosts) and host.lower().rstrip(".") in self.hosts

    def refused(self, ip: IPAddress) -> str | None:
        """Why the policy refuses this address, or None when it may be reached."""
        if any(ip.version == n.version and ip in n for n in self.networks):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_v4(ip)
            if inner is not None:
                return self.refused(inner)
        category = _category(ip)
        return f"a {category} address" if category else None

    def screen(self, url: str) -> str | None:
        """The checks that need no DNS: scheme, host, and an IP-literal host. Returns the host name
        still to resolve, or None when nothing is left to check. Raises EgressRefused."""
        try:
            u = URL(url)  # aiohttp's own parser: what we check is what it connects to
        except (ValueError, TypeError):
            raise EgressRefused("it is not a valid URL") from None
        if u.scheme not in ("http", "https"):
            raise EgressRefused("only http and https URLs are allowed")
        host = u.raw_host
        if not host:
            raise EgressRefused("it has no host")
        if self.host_allowed(host):
            return None
        if _loopback_name(host):
            raise EgressRefused("its host is a loopback name")
        ip = literal_address(host)
        if ip is None:
            return host
        reason = self.refused(ip)
        if reason is not None:
            raise EgressRefused(f"its host is {reason}")
        return None

    def check_infos(self, host: str, addresses: Iterable[str]) -> None:
        """Refuse when any resolved address is refused (an attacker controls which one is used)."""
        for a in addresses:
            reason = self.refused(_ip_of(a))
            if reason is not None:
                raise EgressRefused(f"its host resolves to {reason}")

    async def check(self, url: str) -> None:
        """The full check, for the API boundary: `screen`, then the host resolved (off the loop)."""
        host = self.screen(url)
        if host is None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DNS_TIMEOUT_S):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            # Nothing to refuse: a name we cannot resolve is one we cannot reach either. An upstream
            # may still fetch it (its network, not ours); our own fetch resolves and checks it again.
            return
        self.check_infos(host, (str(i[4][0]) for i in infos))


STRICT = EgressPolicy()


def parse_allowlist(raw: str | None) -> tuple[str, ...]:
    """PRIVATE_URL_ALLOWLIST (comma-separated) → its entries, validated. Raises ValueError."""
    entries = tuple(e.strip() for e in (raw or "").split(",") if e.strip())
    EgressPolicy.parse(entries)
    return entries


@lru_cache(maxsize=8)
def policy_for(entries: tuple[str, ...]) -> EgressPolicy:
    """One parsed policy per allowlist (a config snapshot's tuple), so a request pays no parsing."""
    return EgressPolicy.parse(entries)


async def check_param(policy: EgressPolicy, urls: Iterable[str], param: str) -> None:
    """The API boundary: every caller URL (data: URLs excepted) checked, or a 400 naming `param`."""
    todo = list(dict.fromkeys(u for u in urls if not u.startswith("data:")))
    if not todo:
        return
    try:
        await asyncio.gather(*(policy.check(u) for u in todo))
    except EgressRefused as e:
        raise refusal(param, e) from None


def refusal(param: str, e: EgressRefused) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not an allowed URL: {e.reason}; the gateway only reaches public "
                          f"addresses for caller-supplied URLs ({HINT}).", param=param, code="url_not_allowed")


def refused_by_policy(exc: BaseException) -> EgressRefused | None:
    """The refusal behind an aiohttp connection error raised by GuardedResolver, if it was one."""
    if isinstance(exc, EgressRefused):
        return exc
    os_error = getattr(exc, "os_error", None)
    return os_error if isinstance(os_error, EgressRefused) else None


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses a host with any address the policy
    refuses; aiohttp connects only to the addresses returned here (the connection is pinned)."""

    def __init__(self, policy: Callable[[], EgressPolicy], inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner  # the DNS itself (aiohttp's threaded getaddrinfo unless given)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        policy = self._policy()
        if self._inner is None:
            self._inner = ThreadedResolver()
        if policy.host_allowed(host):
            return await self._inner.resolve(host, port, family)
        if _loopback_name(host):
            raise EgressRefused("its host is a loopback name")
        ip = literal_address(host)  # e.g. 0x7f.1: not an IP to aiohttp, but one to getaddrinfo
        if ip is not None and (reason := policy.refused(ip)) is not None:
            raise EgressRefused(f"its host is {reason}")
        infos = await self._inner.resolve(host, port, family)  # a DNS failure stays one (retryable)
        policy.check_infos(host, (r["host"] for r in infos))
        return infos

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_session(policy: Callable[[], EgressPolicy], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """A session for caller URLs. No DNS cache: every new connection is resolved and checked again
    (these sessions carry little traffic). No cookies, and no proxy from the environment."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), use_dns_cache=False,
                                     enable_cleanup_closed=True)
    return new_session(timeout, connector, trust_env=False)
