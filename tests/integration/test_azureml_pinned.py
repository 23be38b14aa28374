"""The azureml:// client connects to the very address the SSRF guard checked (docs/api.md, decision 11): a name whose
DNS answer changes between the check and the connection (DNS rebinding: a public address for the check, loopback
for the connection) must not reach the loopback service. The loopback fake (tests/support/azure_fake.py) STANDS IN
FOR THE AZURE REGISTRY GATEWAY; name resolution is faked in-process, and no connection to the public address is
ever opened (the test refuses it before a packet is sent).
"""
import socket

import pytest

from foundry_inference.operator import azureml
from tests.support.azure_fake import AzureFake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
NAME = "models.rebind.example.com"
PUBLIC = "8.8.8.8"


@pytest.fixture
def rebinding(monkeypatch):
    """NAME resolves to PUBLIC once (the check), to loopback afterwards; connecting to PUBLIC is refused locally."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    answers = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = PUBLIC if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    def create_connection(address, *args, **kwargs):
        if address[0] == PUBLIC:
            raise ConnectionRefusedError(f"refused locally: the test never sends traffic to {PUBLIC}")
        return real_connect(address, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return answers


def test_attack_dns_rebinding_after_the_check_never_reaches_an_internal_address(rebinding, monkeypatch):
    monkeypatch.delenv("FOUNDRY_REGISTRY_ALLOWLIST", raising=False)
    with AzureFake() as fake:
        uri = fake.add_model("M", "1", {"v1/genai_config.json": b"{}"})
        settings = azureml.AzureSettings(registry_url=f"http://{NAME}:{fake.port}/registry/{{region}}",
                                         region="centralus", insecure=True, attempts=1, backoff_s=0,
                                         allowlist=frozenset())
        with pytest.raises(azureml.FetchError):
            azureml.Client(settings, sleep=lambda s: None).lookup(azureml.parse_uri(uri))
        assert fake.requests == [], "a request reached the loopback service through a rebound name"
    assert rebinding[0] == PUBLIC
