"""The one server-side request forgery guard (docs/api.md, decision 11), used by the control plane when a user names a
registry and by the model fetcher before every connection it opens (each redirect hop included).

A user names hosts the platform will connect to from inside the cluster (or, in embedded mode, from this machine),
so a host may not point into the cluster or at this host: literal IP addresses in any notation, `localhost`,
`*.localhost`, `*.local`, `*.internal`, single-label names and metadata hosts are refused, and so is a name that
resolves to a private, loopback, link-local, multicast, reserved, shared (CGNAT) or unspecified address.

- `check_registry` (control plane): the name rules, and the addresses the name resolves to now; a name that does not
  resolve yet is accepted, because the fetcher checks again when it connects.
- `connect_addresses` (fetcher): the same rules, on the one resolution whose addresses the caller then connects to -
  no second lookup, so DNS cannot answer differently between the check and the connection (rebinding).

An explicit allow-list (`host[:port]`, FOUNDRY_REGISTRY_ALLOWLIST, the chart's `registryAllowlist`) admits
air-gapped registries on private addresses; the fetcher's lab switch (FOUNDRY_FETCH_ALLOW_PRIVATE, tests only)
skips the checks but still connects to the address it resolved.
"""
import ipaddress
import re
import socket

BLOCKED_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".in-addr.arpa", ".ip6.arpa")
BLOCKED_NAMES = {"localhost", "metadata", "metadata.google.internal", "metadata.azure.com", "instance-data",
                 "instance-data.ec2.internal", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class SsrfError(ValueError):
    pass


def _split_port(registry):
    if registry.startswith("["):
        host, sep, rest = registry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise SsrfError("malformed bracketed address")
        return host, rest[1:] or None
    if registry.count(":") > 1:
        return registry, None  # a bare IPv6 literal
    host, _, port = registry.partition(":")
    return host, port or None


def _is_ip_literal(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # accepts the legacy forms: 2130706433, 0x7f.1, 0177.0.0.1, 127.1
        return True
    except OSError:
        return False


def _forbidden_address(addr):
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def system_resolver(host):
    """Addresses `host` resolves to now, in the resolver's order without repeats; empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def parse_allowlist(raw):
    """`host[:port],...` (FOUNDRY_REGISTRY_ALLOWLIST) or an iterable of entries -> a set of lower-case entries."""
    items = raw.split(",") if isinstance(raw, str) else (raw or ())
    return {item.strip().lower() for item in items if item and item.strip()}


def _allowed(value, host, allowlist):
    return value in allowlist or host in allowlist


def check_registry(registry, allowlist=(), resolver=system_resolver):
    """Return the normalised registry (`host[:port]`, lower case) or raise SsrfError with the reason."""
    if not isinstance(registry, str) or not registry.strip():
        raise SsrfError("registry is required")
    value = registry.strip().lower()
    if len(value) > 253 + 6:
        raise SsrfError("registry name is too long")
    allowlist = parse_allowlist(allowlist)
    if value in allowlist:
        return value
    if "://" in value or any(ch in value for ch in "/@?#\\ \t"):
        raise SsrfError("registry must be a host name with an optional port, without scheme, path or credentials")
    host, port = _split_port(value)
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise SsrfError("registry port must be 1-65535")
    host = host.rstrip(".")
    if host in allowlist:
        return value
    host = _check_name(host)
    for addr in resolver(host):
        if _forbidden_address(addr):
            raise SsrfError(f"{host} resolves to a private or internal address")
    return value


def _check_name(host):
    """The name rules; returns the host in its ASCII (IDNA) form."""
    if _is_ip_literal(host):
        raise SsrfError("IP addresses are not allowed: use a DNS name")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise SsrfError("not a valid host name") from None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise SsrfError("not a valid host name")
    if len(labels) < 2:
        raise SsrfError("single-label (internal) host names are not allowed")
    if host in BLOCKED_NAMES or host.endswith(BLOCKED_SUFFIXES) or labels[-1].isdigit():
        raise SsrfError(f"{host} is an internal host name")
    return host


def connect_addresses(host, port, *, allowlist=(), allow_private=False, resolver=system_resolver):
    """The addresses to connect to for `host`:`port`, resolved once and checked; SsrfError when the host may not be
    reached (an internal name, an IP literal, a name resolving to any internal address, or one that does not
    resolve). Connect to these addresses, never to the name again."""
    host = (host or "").strip().lower().rstrip(".")
    if not host:
        raise SsrfError("no host")
    allowlist = parse_allowlist(allowlist)
    trusted = allow_private or _allowed(f"{host}:{port}", host, allowlist) or (
        ":" in host and _allowed(f"[{host}]:{port}", host, allowlist))
    if not trusted and _is_ip_literal(host.strip("[]")):
        literal = host.strip("[]")
        try:
            internal = _forbidden_address(literal)
        except ValueError:
            internal = False      # a legacy notation (0x7f.1, 2130706433): the name rules refuse it below
        if internal:
            raise SsrfError(f"refusing to fetch from {host}: it resolves to the internal address {literal}")
    name = host if trusted else _check_name(host)
    addresses = resolver(name)
    if not addresses:
        raise SsrfError(f"cannot resolve {host}")
    if not trusted:
        for addr in addresses:
            if _forbidden_address(addr):
                raise SsrfError(f"refusing to fetch from {host}: it resolves to the internal address {addr}")
    return list(addresses)
