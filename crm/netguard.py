"""Outbound connections (webhooks, DingTalk, WeCom): only to public internet addresses.

A host is resolved once; every address it resolves to must be public (not loopback, private, link-local,
shared, reserved, multicast or unspecified — IPv4-mapped IPv6 checked as IPv4; integer, octal and hex
IPv4 spellings are what the resolver makes of them), then the socket connects to that checked address
and its peer address is checked again before anything is sent. TLS still verifies the certificate
against the host name (SNI), so a rebinding DNS answer cannot swap in another address after the check.

``CRM_OUTBOUND_ALLOW`` (config or environment): a comma-separated allow-list of networks
(``10.0.0.0/8``, ``192.168.1.20``) and host names (``relay.corp.local``) a team may reach anyway,
e.g. a local relay. Empty by default; the test suite allows loopback (its receivers run on 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(OSError):
    """The destination is not allowed; ``str()`` is for the log, never for the user."""


@dataclass(frozen=True)
class Policy:
    """What may be reached besides public addresses."""

    networks: tuple = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, spec: str | None) -> Policy:
        networks, hosts = [], set()
        for item in (spec or "").replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        ip = _unmapped(ip)
        if is_public(ip):
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)


def current_policy() -> Policy:
    """The app's ``CRM_OUTBOUND_ALLOW`` inside an app context, else the environment's."""
    from flask import current_app, has_app_context

    if has_app_context():
        return Policy.parse(current_app.config.get("CRM_OUTBOUND_ALLOW"))
    return Policy.parse(os.environ.get("CRM_OUTBOUND_ALLOW"))


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address."""
    ip = _unmapped(ip)
    return ip.is_global and not (
        ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified
    )


def literal_address(host: str) -> IPAddress | None:
    """The address a host name spells directly, in any form a resolver accepts (``2130706433``,
    ``0x7f.1``, ``0177.0.0.1``, ``[::1]``), else None (a name that needs DNS)."""
    host = (host or "").strip().strip("[]")
    if not host:
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def check_host(host: str, policy: Policy) -> None:
    """Refuse a host that is, or plainly names, a non-public address (no DNS; used when saving a URL)."""
    host = (host or "").strip().lower().rstrip(".")
    if policy.allows_host(host):
        return
    if host == "localhost" or host.endswith(".localhost"):
        if policy.allows_address(ipaddress.ip_address("127.0.0.1")):
            return
        raise Refused(f"{host} is loopback")
    ip = literal_address(host)
    if ip is not None and not policy.allows_address(ip):
        raise Refused(f"{host} is the non-public address {ip}")


def resolve(host: str, port: int, policy: Policy) -> list[tuple]:
    """``getaddrinfo`` results for a TCP connection, all checked; refuses if any address is not allowed
    (a name answering both a public and a private address is not trusted)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from exc
    if not infos:
        raise Refused(f"{host} resolves to nothing")
    if not policy.allows_host(host):
        for *_rest, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            if not policy.allows_address(ip):
                raise Refused(f"{host} resolves to the non-public address {ip}")
    return infos


def connect(host: str, port: int, timeout: float | None, policy: Policy) -> socket.socket:
    """A TCP socket to a checked address of ``host``; the peer address is checked once more."""
    last: OSError | None = None
    for family, type_, proto, _canon, sockaddr in resolve(host, port, policy):
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            peer = ipaddress.ip_address(sock.getpeername()[0].split("%", 1)[0])
            if not (policy.allows_host(host) or policy.allows_address(peer)):
                raise Refused(f"{host} connected to the non-public address {peer}")
            return sock
        except Refused:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot connect to {host}:{port}")
