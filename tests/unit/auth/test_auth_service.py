"""AuthService.check end to end without a web framework: modes, no fallback, action mapping."""
import asyncio

import pytest

from foundry_inference.auth import actions
from foundry_inference.auth.errors import (
    AmbiguousAuth,
    InsufficientPermissions,
    InvalidApiKey,
    InvalidToken,
    MissingCredentials,
)
from foundry_inference.auth.principal import ANONYMOUS, DEPLOYMENT_KEY, USER, Resource
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings

pytestmark = pytest.mark.unit

A = "a" * 64


def service(mode, key_dir=None, issuer=None, **kw):
    extra = {}
    if issuer is not None:
        extra = dict(tenant_id=issuer.tenant_id, client_id=issuer.client_id, authority=issuer.authority,
                     jwks_refresh_min_s=0.0)
    return AuthService.from_settings(AuthSettings(mode=mode, api_keys_dir=str(key_dir) if key_dir else None,
                                                  deployment_name="phi4", deployment_namespace="default",
                                                  **extra, **kw))


def check(svc, headers, method="POST", **kw):
    return asyncio.run(svc.check(method, headers, **kw))


def test_api_key_mode(key_dir):
    svc = service("api-key", key_dir)
    assert check(svc, {"api-key": A}).kind == DEPLOYMENT_KEY
    assert check(svc, {"Authorization": f"Bearer {A}"}).kind == DEPLOYMENT_KEY
    with pytest.raises(MissingCredentials):
        check(svc, {})
    with pytest.raises(AmbiguousAuth):
        check(svc, {"api-key": A, "Authorization": f"Bearer {A}"})
    with pytest.raises(InvalidToken, match="not accepted"):
        check(svc, {"Authorization": "Bearer a.b.c"})


def test_entra_mode_rejects_keys_without_trying_them(key_dir, issuer):
    svc = service("entra", key_dir, issuer)
    assert check(svc, {"Authorization": f"Bearer {issuer.mint(app=True)}"}).kind == "app"
    with pytest.raises(InvalidToken, match="not a JWT"):
        check(svc, {"Authorization": f"Bearer {A}"})
    with pytest.raises(InvalidApiKey, match="not accepted"):
        check(svc, {"api-key": A})


def test_both_mode_detects_by_shape_and_never_falls_back(key_dir, issuer):
    svc = service("both", key_dir, issuer)
    assert check(svc, {"Authorization": f"Bearer {A}"}).kind == DEPLOYMENT_KEY
    assert check(svc, {"Authorization": f"Bearer {issuer.mint(roles=['Foundry.User'])}"}).kind == USER
    with pytest.raises(InvalidToken):           # a bad JWT is not retried as a key
        check(svc, {"Authorization": f"Bearer {issuer.mint(aud='x')}"})
    with pytest.raises(InvalidApiKey):          # a bad key is not retried as a token
        check(svc, {"Authorization": "Bearer " + "z" * 64})


def test_valid_token_without_the_action_is_403(key_dir, issuer):
    svc = service("both", key_dir, issuer)
    with pytest.raises(InsufficientPermissions):
        check(svc, {"Authorization": f"Bearer {issuer.mint()}"})     # delegated, no role mapped to the action


def test_control_plane_method_mapping(tmp_path, issuer):
    admin = tmp_path / "admin"
    admin.write_text("adminkey")
    svc = AuthService.from_settings(AuthSettings(mode="both", plane="control", admin_key_file=str(admin),
                                                 tenant_id=issuer.tenant_id, client_id=issuer.client_id,
                                                 authority=issuer.authority))
    reader = {"Authorization": f"Bearer {issuer.mint(app=True, roles=['Foundry.Reader'])}"}
    assert check(svc, reader, "GET") and check(svc, reader, "HEAD")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        with pytest.raises(InsufficientPermissions):
            check(svc, reader, method)
        assert check(svc, {"api-key": "adminkey"}, method).identity == "apikey:admin"
    assert svc.action_for("DELETE") == actions.DEPLOYMENTS_DELETE
    assert svc.action_for("POST", actions.DATA) == actions.DATA_ACTION


def test_deployment_key_cannot_use_the_control_plane(key_dir):
    svc = service("api-key", key_dir, plane="control")
    with pytest.raises(InsufficientPermissions):
        check(svc, {"api-key": A}, "GET")


def test_unknown_method_is_denied(key_dir):
    svc = service("api-key", key_dir, plane="control")
    with pytest.raises(InsufficientPermissions):
        check(svc, {"api-key": A}, "PROPFIND")


def test_none_mode_allows_everything():
    svc = AuthService.from_settings(AuthSettings(mode="none"))
    assert check(svc, {}).kind == ANONYMOUS


def test_default_resource_is_the_deployment(key_dir):
    assert service("api-key", key_dir).default_resource == Resource("default", "phi4")


def _outcome(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return type(exc), str(exc)


@pytest.mark.parametrize("mode", ["none", "api-key", "entra", "both"])
def test_check_now_decides_as_check_does_or_leaves_it_to_check(key_dir, issuer, mode):
    # check_now() is the hot path's check without a coroutine: for every credential it must give check()'s answer,
    # or None where only check() can decide (an Entra token) - never a different decision
    svc = service(mode, key_dir, issuer if mode in ("entra", "both") else None)
    cases = [{}, {"api-key": A}, {"Authorization": f"Bearer {A}"}, {"X-API-Key": A}, {"api-key": "wrong"},
             {"api-key": A, "Authorization": f"Bearer {A}"}, {"Authorization": "Basic abc"}, {"api-key": " "},
             {"Authorization": "Bearer a.b.c"}, {"Authorization": f"Bearer {issuer.mint(app=True)}"},
             {"Authorization": f"Bearer {issuer.mint(roles=['Foundry.User'])}"}]
    deferred = 0
    for headers in cases:
        now = _outcome(lambda headers=headers: svc.check_now("POST", headers))
        if now is None:
            deferred += 1
            assert mode in ("entra", "both") and headers.get("Authorization", "").count(".") == 2, headers
            continue
        assert now == _outcome(lambda headers=headers: check(svc, headers)), headers
    assert deferred == (3 if mode in ("entra", "both") else 0)
