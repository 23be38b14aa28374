"""JWKS cache policy with an injected fetch and clock: refresh limits, outages, concurrency, key parsing."""
import asyncio

import pytest

from foundry_inference.auth.errors import InvalidToken, SigningKeysUnavailable
from foundry_inference.auth.http import UpstreamUnavailable
from foundry_inference.auth.jwks import JwksCache, parse_jwks
from tests.support.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.unit

ISS = "https://login.example/t/v2.0"


class FakeIssuer:
    def __init__(self):
        self.oidc = OidcIssuer()          # keys and JWKS documents only; not served
        self.up = True
        self.calls = 0
        self.gate = None

    async def fetch(self, url, timeout):
        self.calls += 1
        if self.gate:
            await self.gate.wait()
        if not self.up:
            raise UpstreamUnavailable("down")
        if url.endswith("openid-configuration"):
            return 200, {"issuer": ISS, "jwks_uri": "https://login.example/keys"}
        return 200, self.oidc.jwks()


def cache(fake, clock, **kw):
    return JwksCache(f"{ISS}/.well-known/openid-configuration", expected_issuer=ISS, fetch=fake.fetch, clock=clock,
                     **kw)


def test_known_kid_is_served_from_cache(clock):
    fake = FakeIssuer()
    c = cache(fake, clock)
    kid = fake.oidc.current_kid
    asyncio.run(c.get_key(kid))
    asyncio.run(c.get_key(kid))
    assert fake.calls == 2          # discovery + JWKS, once


def test_unknown_kid_refresh_is_rate_limited(clock):
    fake = FakeIssuer()
    c = cache(fake, clock, refresh_min_s=60)
    asyncio.run(c.get_key(fake.oidc.current_kid))
    new = fake.oidc.add_key()
    clock.advance(10)
    with pytest.raises(InvalidToken):
        asyncio.run(c.get_key(new))                # within the interval: no refresh
    assert fake.calls == 2
    clock.advance(51)
    assert asyncio.run(c.get_key(new))             # interval over: one refresh finds it
    assert fake.calls == 4


def test_concurrent_unknown_kids_share_one_refresh(clock):
    fake = FakeIssuer()
    c = cache(fake, clock, refresh_min_s=0)

    async def scenario():
        await c.get_key(fake.oidc.current_kid)
        fake.gate = asyncio.Event()
        tasks = [asyncio.ensure_future(c.get_key(f"k{i}")) for i in range(20)]
        await asyncio.sleep(0.01)
        fake.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, InvalidToken) for r in results)
    assert fake.calls == 4                         # one more discovery + JWKS for all twenty


def test_nothing_cached_and_down_is_503_with_retry_backoff(clock):
    fake = FakeIssuer()
    fake.up = False
    c = cache(fake, clock, retry_empty_s=2)
    for _ in range(5):
        with pytest.raises(SigningKeysUnavailable):
            asyncio.run(c.get_key("x"))
    assert fake.calls == 1                         # the flood did not hammer the issuer
    clock.advance(2)
    fake.up = True
    assert asyncio.run(c.get_key(fake.oidc.current_kid))


def test_stale_keys_survive_a_failed_refresh(clock):
    fake = FakeIssuer()
    c = cache(fake, clock, ttl_s=100, refresh_min_s=0)
    kid = fake.oidc.current_kid
    asyncio.run(c.get_key(kid))
    fake.up = False
    clock.advance(1000)
    assert asyncio.run(c.get_key(kid))
    assert fake.calls == 3


def test_parse_jwks_keeps_only_rsa_signing_keys():
    oidc = OidcIssuer()
    good = oidc.jwks()["keys"][0]
    doc = {"keys": [good, {**good, "kid": "enc", "use": "enc"}, {**good, "kid": "ps", "alg": "PS256"},
                    {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "a", "y": "b"}, {**good, "kid": "bad", "n": "!!"},
                    "junk", {"kty": "RSA"}]}
    assert list(parse_jwks(doc)) == [good["kid"]]


def test_private_material_in_a_jwk_is_reduced_to_the_public_key():
    import json

    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(priv))
    jwk["kid"] = "p"
    key = parse_jwks({"keys": [jwk]})["p"]
    assert isinstance(key, rsa.RSAPublicKey)
