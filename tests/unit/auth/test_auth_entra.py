"""Entra ID token validation against a real OIDC issuer on loopback (discovery + JWKS over HTTP), with the attacks
the issue lists. Every rejection is a 401 `invalid_token` whose message names the reason and never echoes the token."""
import asyncio
import time

import jwt
import pytest

from foundry_inference.auth.entra import EntraTokenValidator
from foundry_inference.auth.errors import InvalidToken, SigningKeysUnavailable
from foundry_inference.auth.principal import APP, USER
from tests.support.oidc_issuer import OidcIssuer, tamper

pytestmark = pytest.mark.unit


def validator(issuer, **kw):
    kw.setdefault("refresh_min_s", 0.0)
    return EntraTokenValidator(tenant_id=issuer.tenant_id, client_id=issuer.client_id, authority=issuer.authority,
                               **kw)


def validate(issuer, token, v=None):
    return asyncio.run((v or validator(issuer)).validate(token))


def rejected(issuer, token, reason, v=None):
    with pytest.raises(InvalidToken) as err:
        validate(issuer, token, v)
    assert err.value.status == 401 and err.value.code == "invalid_token"
    assert reason in err.value.message
    assert token not in err.value.message
    return err.value


def test_delegated_token(issuer):
    token = issuer.mint(oid="11111111-2222-3333-4444-555555555555", groups=["g1"])
    p = validate(issuer, token)
    assert p.identity == "11111111-2222-3333-4444-555555555555" and p.kind == USER
    assert p.scopes == ("foundry_access",) and p.groups == ("g1",) and p.tenant == issuer.tenant_id


def test_application_token(issuer):
    p = validate(issuer, issuer.mint(app=True, roles=["Foundry.Admin"]))
    assert p.kind == APP and p.roles == ("Foundry.Admin",)


def test_audience_may_be_the_app_id_uri(issuer):
    assert validate(issuer, issuer.mint(aud=f"api://{issuer.client_id}"))


def test_scope_among_others(issuer):
    assert validate(issuer, issuer.mint(scp="User.Read foundry_access offline_access"))


def test_alg_none(issuer):
    rejected(issuer, issuer.unsigned(), "RS256")


def test_hs256_signed_with_the_public_key(issuer):
    rejected(issuer, issuer.hs256_with_public_key(), "RS256")


def test_rs256_header_but_signed_by_another_key(issuer):
    other = OidcIssuer()          # not started: only its key is used
    forged = issuer.mint(key=other.keys[other.current_kid])     # kid of the real issuer, wrong key
    rejected(issuer, forged, "signature")


def test_expired(issuer):
    rejected(issuer, issuer.mint(exp=int(time.time()) - 3600), "expired")


def test_expired_within_leeway_is_accepted(issuer):
    assert validate(issuer, issuer.mint(exp=int(time.time()) - 10))


def test_not_yet_valid(issuer):
    rejected(issuer, issuer.mint(nbf=int(time.time()) + 3600), "not valid yet")


def test_wrong_audience(issuer):
    rejected(issuer, issuer.mint(aud="api://someone-else"), "audience")


def test_wrong_issuer(issuer):
    rejected(issuer, issuer.mint(iss="https://login.microsoftonline.com/evil/v2.0"), "issuer")


def test_v1_issuer_is_rejected_with_a_clear_reason(issuer):
    rejected(issuer, issuer.mint(iss=issuer.v1_issuer, ver="1.0"), "v1.0")


def test_wrong_tenant(issuer):
    rejected(issuer, issuer.mint(tid="00000000-0000-0000-0000-000000000000"), "tenant")


def test_missing_scope(issuer):
    rejected(issuer, issuer.mint(scp="User.Read"), "foundry_access")
    rejected(issuer, issuer.mint(scp=None, idtyp="user"), "foundry_access")


def test_app_token_without_roles(issuer):
    rejected(issuer, issuer.mint(app=True, roles=None), "app role")
    rejected(issuer, issuer.mint(app=True, roles=[]), "app role")


@pytest.mark.parametrize("claim", ["oid", "tid", "exp", "aud", "iss"])
def test_required_claims(issuer, claim):
    rejected(issuer, issuer.mint(**{claim: None}), claim)


def test_unknown_kid(issuer):
    rejected(issuer, issuer.mint(kid="no-such-kid", key=issuer.keys[issuer.current_kid]), "unknown key")


def test_missing_kid(issuer):
    token = jwt.encode(issuer.claims(), issuer.keys[issuer.current_kid], algorithm="RS256")
    rejected(issuer, token, "kid")


def test_tampered_payload(issuer):
    token = issuer.mint(scp="User.Read")
    rejected(issuer, tamper(token, scp="foundry_access"), "signature")
    rejected(issuer, tamper(issuer.mint(), oid="someone-else"), "signature")


@pytest.mark.parametrize("garbage", ["a.b.c", "....", "eyJ.eyJ.sig", "\x00\x01.\x02.\x03", "ü.ü.ü"])
def test_garbage(issuer, garbage):
    rejected(issuer, garbage, "malformed")


def test_issuer_key_rotation_old_key_removed(issuer):
    async def scenario():
        v = validator(issuer, refresh_min_s=0.0)
        old_token = issuer.mint()
        assert await v.validate(old_token)
        issuer.rotate()
        new_token = issuer.mint()
        assert await v.validate(new_token)            # unknown kid -> one refresh -> new key
        with pytest.raises(InvalidToken, match="unknown key"):
            await v.validate(old_token)               # the old key is gone from the JWKS and from the cache
    asyncio.run(scenario())


def test_unknown_kid_flood_refreshes_at_most_once_per_interval(issuer):
    async def scenario():
        v = validator(issuer, refresh_min_s=60.0)
        assert await v.validate(issuer.mint())
        fetches = issuer.hits["jwks"]
        key = issuer.keys[issuer.current_kid]
        results = await asyncio.gather(*(v.validate(issuer.mint(kid=f"random-{i}", key=key)) for i in range(50)),
                                       return_exceptions=True)
        assert all(isinstance(r, InvalidToken) for r in results)
        assert issuer.hits["jwks"] - fetches <= 1
    asyncio.run(scenario())


def test_jwks_down_with_cached_keys_keeps_working(issuer):
    async def scenario():
        v = validator(issuer, refresh_min_s=0.0, ttl_s=0.001)     # keys always "stale": every use tries a refresh
        assert await v.validate(issuer.mint())
        issuer.available = False
        await asyncio.sleep(0.01)
        assert await v.validate(issuer.mint())
        issuer.stop()                                              # connection refused, not just 503
        assert await v.validate(issuer.mint())
    asyncio.run(scenario())


def test_jwks_down_with_nothing_cached_is_503(issuer):
    issuer.available = False
    with pytest.raises(SigningKeysUnavailable) as err:
        validate(issuer, issuer.mint())
    assert err.value.status == 503 and err.value.code == "rbac_check_unavailable"


def test_issuer_unreachable_with_nothing_cached_is_503():
    issuer = OidcIssuer().start()
    token = issuer.mint()
    v = validator(issuer, timeout_s=1.0)
    issuer.stop()
    with pytest.raises(SigningKeysUnavailable):
        validate(issuer, token, v)


def test_discovery_for_another_issuer_is_refused(issuer):
    issuer.discovery = lambda: {"issuer": "https://evil.example/x/v2.0",
                                "jwks_uri": f"{issuer.authority}/{issuer.tenant_id}/discovery/v2.0/keys"}
    with pytest.raises(SigningKeysUnavailable):
        validate(issuer, issuer.mint())


def test_issuer_calls_do_not_block_the_event_loop(issuer):
    issuer.delay_s = 0.5

    async def scenario():
        v = validator(issuer)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        assert await v.validate(issuer.mint())
        t.cancel()
        return ticks

    assert asyncio.run(scenario()) >= 40       # ~1 s of issuer latency (discovery + JWKS); the loop kept running


# --- the validated-token cache --------------------------------------------------------------------------------------

class Wall:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


def counting(v):
    calls = []
    real = v._decode

    def spy(token, key):
        calls.append(1)
        return real(token, key)

    v._decode = spy
    return calls


def test_a_repeated_token_is_verified_once(issuer):
    v = validator(issuer)
    calls = counting(v)
    token = issuer.mint()

    async def scenario():
        for _ in range(5):
            assert (await v.validate(token)).kind == USER
    asyncio.run(scenario())
    assert len(calls) == 1


def test_cached_validation_ends_at_exp_and_after_the_cache_ttl(issuer):
    wall = Wall()
    v = validator(issuer, wall_clock=wall, token_cache_s=300)
    calls = counting(v)
    short = issuer.mint(lifetime=100)
    long = issuer.mint(lifetime=3600)

    async def scenario():
        await v.validate(short)
        await v.validate(long)
        wall.now += 101                       # past the short token's exp: verified again (and judged on real time)
        await v.validate(short)
        await v.validate(long)
        assert len(calls) == 3
        wall.now += 300                       # past the cache ttl for the long token
        await v.validate(long)
        assert len(calls) == 4
    asyncio.run(scenario())


def test_token_cache_can_be_switched_off(issuer):
    v = validator(issuer, token_cache_s=0)
    calls = counting(v)
    token = issuer.mint()
    asyncio.run(v.validate(token))
    asyncio.run(v.validate(token))
    assert len(calls) == 2


def test_a_rejected_token_is_never_cached(issuer):
    v = validator(issuer)
    token = issuer.mint(scp="User.Read")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            asyncio.run(v.validate(token))
    assert not v._validated
