"""SSRF guard for registries: every notation of an internal address is refused; names are checked by what they
resolve to. DNS cannot be steered from a test, so the resolution rule is exercised through the guard's resolver
parameter with a hosts-file resolver (the guard's real resolver is `socket.getaddrinfo`)."""
import pytest

from foundry_inference.apps.controlplane.ssrf import SsrfError, check_registry, system_resolver

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
