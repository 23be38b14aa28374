"""The one SSRF guard (control plane and fetcher): every notation of an internal address is refused; names are
checked by what they resolve to. DNS cannot be steered from a test, so the resolution rule is exercised through the
guard's resolver parameter with a hosts-file resolver (the guard's real resolver is `socket.getaddrinfo`)."""
import pytest

from foundry_inference.ssrf import SsrfError, check_registry, connect_addresses, system_resolver

pytestmark = pytest.mark.unit

HOSTS = {"evil.example.com": {"10.1.2.3"}, "mapped.example.com": {"::ffff:192.168.0.1"},
         "meta.example.com": {"169.254.169.254"}, "good.example.com": {"20.1.2.3"},
         "mixed.example.com": {"20.1.2.3", "127.0.0.1"}, "v6local.example.com": {"fd00::1"}}


def hosts(name):
    return HOSTS.get(name, set())


@pytest.mark.parametrize("registry", ["evil.example.com", "mapped.example.com", "meta.example.com",
                                      "mixed.example.com", "v6local.example.com:5000"])
def test_names_resolving_to_internal_addresses_are_refused(registry):
    with pytest.raises(SsrfError, match="resolves to a private"):
        check_registry(registry, resolver=hosts)


@pytest.mark.parametrize("registry", ["good.example.com", "GOOD.example.com:443", "unresolvable.example.org"])
def test_public_or_unresolvable_names_are_accepted(registry):
    assert check_registry(registry, resolver=hosts) == registry.lower()


@pytest.mark.parametrize("registry", ["127.0.0.1", "0x7f.0.0.1", "017700000001", "127.1", "[::]", "::ffff:7f00:1",
                                      "[::ffff:169.254.169.254]:80", "100.64.0.1", "198.18.0.1", "240.0.0.1"])
def test_ip_literals_in_any_notation_are_refused(registry):
    with pytest.raises(SsrfError):
        check_registry(registry, resolver=hosts)


def test_allow_list_admits_an_air_gapped_registry_and_nothing_else():
    assert check_registry("127.0.0.1:5000", allowlist=["127.0.0.1:5000"]) == "127.0.0.1:5000"
    assert check_registry("registry.corp.internal", allowlist=["registry.corp.internal"]) == "registry.corp.internal"
    with pytest.raises(SsrfError):
        check_registry("127.0.0.1:5001", allowlist=["127.0.0.1:5000"])


def test_the_real_resolver_sees_localhost_as_loopback():
    assert any(addr.startswith("127.") or addr == "::1" for addr in system_resolver("localhost"))


# --- at connection time (the fetcher) -------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example.com", "mapped.example.com", "meta.example.com", "mixed.example.com",
                                  "v6local.example.com", "localhost", "127.0.0.1", "::ffff:10.0.0.1", "0x7f.1",
                                  "metadata.google.internal", "kubernetes.default.svc", "unresolvable.example.org"])
def test_connections_to_internal_or_unresolvable_hosts_are_refused(host):
    with pytest.raises(SsrfError):
        connect_addresses(host, 443, resolver=hosts)


def test_connection_addresses_are_the_checked_ones_and_the_allow_list_and_lab_switch_skip_the_checks():
    assert connect_addresses("GOOD.example.com.", 443, resolver=hosts) == ["20.1.2.3"]
    assert connect_addresses("evil.example.com", 5000, allowlist="evil.example.com:5000", resolver=hosts) == \
        ["10.1.2.3"]
    assert connect_addresses("evil.example.com", 443, allowlist=["evil.example.com"], resolver=hosts) == ["10.1.2.3"]
    with pytest.raises(SsrfError):
        connect_addresses("evil.example.com", 5001, allowlist=["evil.example.com:5000"], resolver=hosts)
    assert connect_addresses("127.0.0.1", 80, allow_private=True, resolver=system_resolver) == ["127.0.0.1"]
    with pytest.raises(SsrfError, match="cannot resolve"):
        connect_addresses("unresolvable.example.org", 443, allow_private=True, resolver=hosts)
