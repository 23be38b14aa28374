"""Server-side request forgery guard for every user-supplied `registry` (docs/api.md, decision 11).

The operator (and in embedded mode, this machine) will connect to whatever registry a user names, so a registry may
not point into the cluster or at this host: literal IP addresses in any notation, `localhost`, `*.localhost`,
`*.local`, `*.internal`, single-label names and metadata hosts are refused, and so is a name that resolves to a
private, loopback, link-local, multicast, reserved or unspecified address. A name that does not resolve now is
accepted (the fetcher re-checks the resolved address before it connects). An explicit allow-list admits
air-gapped registries on private addresses.
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
    """Addresses `host` resolves to now; empty when it does not resolve."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError, OSError):
        return set()


def check_registry(registry, allowlist=(), resolver=system_resolver):
    """Return the normalised registry (`host[:port]`, lower case) or raise SsrfError with the reason."""
    if not isinstance(registry, str) or not registry.strip():
        raise SsrfError("registry is required")
    value = registry.strip().lower()
    if len(value) > 253 + 6:
        raise SsrfError("registry name is too long")
    if value in {a.strip().lower() for a in allowlist if a.strip()}:
        return value
    if "://" in value or any(ch in value for ch in "/@?#\\ \t"):
        raise SsrfError("registry must be a host name with an optional port, without scheme, path or credentials")
    host, port = _split_port(value)
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise SsrfError("registry port must be 1-65535")
    host = host.rstrip(".")
    if host in {a.strip().lower() for a in allowlist if a.strip()}:
        return value
    if _is_ip_literal(host):
        raise SsrfError("IP addresses are not allowed as registry; use a DNS name")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise SsrfError("registry is not a valid host name") from None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise SsrfError("registry is not a valid host name")
    if len(labels) < 2:
        raise SsrfError("single-label (internal) host names are not allowed as registry")
    if host in BLOCKED_NAMES or host.endswith(BLOCKED_SUFFIXES) or labels[-1].isdigit():
        raise SsrfError(f"{host} is an internal host name")
    for addr in resolver(host):
        if _forbidden_address(addr):
            raise SsrfError(f"{host} resolves to a private or internal address")
    return value
