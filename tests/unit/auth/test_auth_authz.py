"""Authorizers: role table, key grants, the decision cache, and the SubjectAccessReview/checkAccess mappings."""
import asyncio
import socket

import pytest

from foundry_inference.auth import actions
from foundry_inference.auth.authz import BackendUnavailable, CachedAuthorizer, KeyGrantAuthorizer
from foundry_inference.auth.authz_azure import AzureCheckAccessBackend, azure_action
from foundry_inference.auth.authz_roles import RoleTableAuthorizer
from foundry_inference.auth.authz_sar import SubjectAccessReviewBackend, resource_attributes, review_body
from foundry_inference.auth.errors import InsufficientPermissions, RbacCheckUnavailable
from foundry_inference.auth.principal import ADMIN_KEY, APP, DEPLOYMENT_KEY, USER, Principal, Resource

pytestmark = pytest.mark.unit

READ, WRITE, DELETE, DATA = (actions.DEPLOYMENTS_READ, actions.DEPLOYMENTS_WRITE, actions.DEPLOYMENTS_DELETE,
                             actions.DATA_ACTION)
R = Resource("default", "phi4")


def allowed(authorizer, principal, action, resource=R):
    try:
        asyncio.run(authorizer.authorize(principal, action, resource))
        return True
    except InsufficientPermissions as exc:
        assert exc.status == 403 and exc.code == "insufficient_permissions" and action in exc.message
        return False


def user(*roles, groups=(), identity="oid-1"):
    return Principal(identity=identity, kind=USER, roles=tuple(roles), groups=tuple(groups))


# --- role table ---------------------------------------------------------------------------------------------------

def test_default_role_table():
    a = RoleTableAuthorizer()
    assert allowed(a, user("Foundry.Reader"), READ) and not allowed(a, user("Foundry.Reader"), WRITE)
    assert all(allowed(a, user("Foundry.Contributor"), x) for x in (READ, WRITE, DELETE, DATA))
    assert allowed(a, user("Foundry.User"), DATA) and not allowed(a, user("Foundry.User"), READ)
    assert all(allowed(a, user("Foundry.Admin"), x) for x in (READ, WRITE, DELETE, DATA))
    assert not allowed(a, user(), DATA)                      # a valid token alone grants nothing
    assert not allowed(a, user("Unknown.Role"), READ)


def test_attack_reader_role_is_not_granted_the_key_actions():
    a = RoleTableAuthorizer()
    for action in (actions.KEYS_LIST, actions.KEYS_REGENERATE):
        assert not allowed(a, user("Foundry.Reader"), action) and not allowed(a, user("Foundry.User"), action)
        assert allowed(a, user("Foundry.Contributor"), action) and allowed(a, user("Foundry.Admin"), action)
    assert not actions.is_data_action(actions.KEYS_LIST)       # a deployment key never reads keys
    assert not allowed(KeyGrantAuthorizer(RoleTableAuthorizer({})), Principal("k", DEPLOYMENT_KEY), actions.KEYS_LIST)


def test_key_actions_map_to_their_own_subresource_and_azure_action():
    attrs = resource_attributes(actions.KEYS_LIST, Resource("ns", "phi4", verb="get"))
    assert attrs == {"group": "foundrylocal.azure.com", "resource": "modeldeployments", "subresource": "keys",
                     "verb": "get", "namespace": "ns", "name": "phi4"}
    assert resource_attributes(actions.KEYS_REGENERATE, Resource("ns", "phi4", verb="create"))["verb"] == "update"
    prefix = "Microsoft.Kubernetes/connectedClusters"
    keys = azure_action(actions.KEYS_LIST, prefix)
    assert keys == f"{prefix}/foundrylocal.azure.com/modeldeployments/listKeys/action"
    assert azure_action(READ, prefix) == f"{prefix}/foundrylocal.azure.com/modeldeployments/read"


def test_configured_roles_and_groups():
    a = RoleTableAuthorizer({"roles": {"ops": ["deployments/*"]},
                             "groups": {"AAAA-group": [actions.DATA_ACTION]}})
    assert allowed(a, user("ops"), DELETE) and not allowed(a, user("ops"), DATA)
    assert allowed(a, user(groups=["aaaa-GROUP"]), DATA)     # group ids compare case-insensitively
    assert not allowed(a, user("Foundry.Admin"), READ)       # a configured table replaces the default


# --- keys ---------------------------------------------------------------------------------------------------------

def test_deployment_key_gets_data_plane_only_and_admin_key_everything():
    a = KeyGrantAuthorizer(RoleTableAuthorizer({}))
    dep = Principal("apikey:phi4:primary", DEPLOYMENT_KEY)
    admin = Principal("apikey:admin", ADMIN_KEY)
    assert allowed(a, dep, DATA) and allowed(a, dep, "some/other/data/action")
    assert not any(allowed(a, dep, x) for x in (READ, WRITE, DELETE))
    assert all(allowed(a, admin, x) for x in (READ, WRITE, DELETE, DATA))
    assert not allowed(a, user(), READ)                      # tokens go to the token authorizer


# --- the decision cache --------------------------------------------------------------------------------------------

class Backend:
    def __init__(self, answer=True):
        self.answer = answer
        self.calls = 0

    async def check(self, principal, action, resource):
        self.calls += 1
        await asyncio.sleep(0)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_allow_is_cached_for_the_ttl_per_identity_action_resource(clock):
    b = Backend(True)
    a = CachedAuthorizer(b, ttl_s=300, clock=clock)
    assert allowed(a, user(), READ) and allowed(a, user(), READ)
    assert b.calls == 1
    assert allowed(a, user(), WRITE) and allowed(a, user(identity="oid-2"), READ)
    assert allowed(a, user(), READ, Resource("other", "x"))
    assert b.calls == 4
    clock.advance(299)
    assert allowed(a, user(), READ) and b.calls == 4
    clock.advance(2)
    assert allowed(a, user(), READ) and b.calls == 5


def test_denials_are_cached_briefly(clock):
    b = Backend(False)
    a = CachedAuthorizer(b, ttl_s=300, deny_ttl_s=30, clock=clock)
    assert not allowed(a, user(), READ) and not allowed(a, user(), READ)
    assert b.calls == 1
    clock.advance(31)
    b.answer = True
    assert allowed(a, user(), READ) and b.calls == 2


def test_unreachable_with_nothing_cached_is_503(clock):
    a = CachedAuthorizer(Backend(BackendUnavailable("down")), clock=clock)
    with pytest.raises(RbacCheckUnavailable) as err:
        asyncio.run(a.authorize(user(), READ, R))
    assert err.value.status == 503 and err.value.code == "rbac_check_unavailable"


def test_unreachable_reuses_a_recent_decision_then_gives_up(clock):
    b = Backend(True)
    a = CachedAuthorizer(b, ttl_s=300, stale_if_error_s=300, clock=clock)
    assert allowed(a, user(), READ)
    b.answer = BackendUnavailable("down")
    clock.advance(400)
    assert allowed(a, user(), READ)                          # expired 100 s ago, within stale-if-error
    clock.advance(300)
    with pytest.raises(RbacCheckUnavailable):
        asyncio.run(a.authorize(user(), READ, R))


def test_concurrent_identical_checks_share_one_call(clock):
    b = Backend(True)
    a = CachedAuthorizer(b, clock=clock)

    async def scenario():
        await asyncio.gather(*(a.authorize(user(), READ, R) for _ in range(20)))

    asyncio.run(scenario())
    assert b.calls == 1


def test_cache_is_bounded(clock):
    a = CachedAuthorizer(Backend(True), max_entries=10, clock=clock)
    for i in range(50):
        allowed(a, user(identity=f"oid-{i}"), READ)
    assert len(a._cache) == 10


# --- SubjectAccessReview mapping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("action,resource,verb", [
    (READ, Resource("ns", "d"), "get"),
    (READ, Resource("ns"), "list"),
    (READ, Resource(), "list"),
    (WRITE, Resource("ns"), "create"),
    (WRITE, Resource("ns", "d"), "update"),
    (WRITE, Resource("ns", "d", verb="patch"), "patch"),
    (DELETE, Resource("ns", "d"), "delete"),
])
def test_sar_control_plane_mapping(action, resource, verb):
    attrs = resource_attributes(action, resource)
    assert attrs["group"] == "foundrylocal.azure.com" and attrs["resource"] == "modeldeployments"
    assert attrs["verb"] == verb
    assert attrs.get("namespace") == resource.namespace and attrs.get("name") == resource.name


def test_sar_data_plane_mapping_and_body():
    p = Principal("oid-9", USER, groups=("g1", "g2"), tenant="tid")
    body = review_body(p, DATA, Resource("team-a", "phi4"))
    assert body["spec"]["user"] == "oid-9" and body["spec"]["groups"] == ["g1", "g2"]
    assert body["spec"]["resourceAttributes"] == {"group": "foundrylocal.azure.com", "resource": "modeldeployments",
                                                  "subresource": "inference", "verb": "create",
                                                  "namespace": "team-a", "name": "phi4"}


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_sar_apiserver_unreachable_is_503():
    from kubernetes import client
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{_closed_port()}"
    cfg.retries = 0
    a = CachedAuthorizer(SubjectAccessReviewBackend(client.ApiClient(cfg), timeout_s=2))
    with pytest.raises(RbacCheckUnavailable):
        asyncio.run(a.authorize(user(), READ, R))


# --- Azure checkAccess mapping (the HTTP exchange is tested against a local server in tests/integration) -----------

def test_azure_action_names():
    prefix = "Microsoft.Kubernetes/connectedClusters"
    assert azure_action(DATA, prefix) == DATA
    assert azure_action(WRITE, prefix) == f"{prefix}/foundrylocal.azure.com/modeldeployments/write"


def test_azure_request_body_and_url():
    b = AzureCheckAccessBackend(endpoint="https://management.azure.com/", scope="/subscriptions/s/rg/x/")
    assert b.url == ("https://management.azure.com/subscriptions/s/rg/x/providers/Microsoft.Authorization/"
                     "checkaccess?api-version=2018-09-01-preview")
    body = b.request_body(Principal("oid", APP, groups=("g",)), DATA)
    assert body == {"Subject": {"Attributes": {"ObjectId": "oid", "Groups": ["g"]}},
                    "Actions": [{"Id": DATA, "IsDataAction": True}], "Resource": {"Id": "/subscriptions/s/rg/x"}}


@pytest.mark.parametrize("status,doc,expected", [
    (200, [{"actionId": DATA, "accessDecision": "Allowed"}], True),
    (200, {"value": [{"actionId": DATA, "accessDecision": "Allowed"}]}, True),
    (200, [{"actionId": DATA, "accessDecision": "NotAllowed"}], False),
    (200, [{"actionId": DATA, "accessDecision": "Denied"}], False),
    (200, [], BackendUnavailable),
    (200, None, BackendUnavailable),
    (200, [{"actionId": "other", "accessDecision": "Allowed"}], BackendUnavailable),
    (429, None, BackendUnavailable),
    (500, None, BackendUnavailable),
    (403, {"error": {"code": "AuthorizationFailed"}}, BackendUnavailable),
])
def test_azure_response_handling(status, doc, expected):
    async def fetch(url, **kw):
        return status, doc

    b = AzureCheckAccessBackend(endpoint="https://arm", scope="/subscriptions/s", fetch=fetch)
    if expected is BackendUnavailable:
        with pytest.raises(BackendUnavailable):
            asyncio.run(b.check(user(), DATA, R))
    else:
        assert asyncio.run(b.check(user(), DATA, R)) is expected


def test_azure_without_a_token_is_unavailable_not_anonymous():
    b = AzureCheckAccessBackend(endpoint="https://arm", scope="/subscriptions/s", token_provider=lambda: None)
    with pytest.raises(BackendUnavailable):
        asyncio.run(b.check(user(), DATA, R))
