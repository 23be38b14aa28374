"""SubjectAccessReview authorizer against the real kube-apiserver of tests/kube (RBAC mode): Roles and RoleBindings
are created as admin, then SAR must allow alice (group `devs`) exactly what the Role grants and deny bob (no groups)
- the same answers the apiserver gives alice and bob for their own requests."""
import asyncio

import kubernetes
import pytest
import requests
import tornado.web

from foundry_inference.apps.base import BaseHandler
from foundry_inference.auth import actions
from foundry_inference.auth.authz import CachedAuthorizer
from foundry_inference.auth.authz_sar import SubjectAccessReviewBackend
from foundry_inference.auth.errors import InsufficientPermissions, RbacCheckUnavailable
from foundry_inference.auth.principal import USER, Principal, Resource
from foundry_inference.auth.service import AuthService
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.auth.tornado import AuthMixin
from tests.support.oidc_issuer import LoopbackServer, OidcIssuer

pytestmark = pytest.mark.integration

GROUP = "foundrylocal.azure.com"
ALICE = Principal("alice", USER, groups=("devs",))
BOB = Principal("bob", USER)


def grant(kube, namespace, name, rules, subject):
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **subject}]})


@pytest.fixture
def devs_can_read_and_infer(kube, kube_namespace):
    grant(kube, kube_namespace, "foundry-devs", [
        {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["get", "list"]},
        {"apiGroups": [GROUP], "resources": ["modeldeployments/inference"], "verbs": ["create"],
         "resourceNames": ["phi4"]},
    ], {"kind": "Group", "name": "devs"})
    return kube_namespace


def decide(authorizer, principal, action, resource):
    try:
        asyncio.run(authorizer.authorize(principal, action, resource))
        return True
    except InsufficientPermissions:
        return False


def test_sar_allows_alice_and_denies_bob(kube, devs_can_read_and_infer):
    ns = devs_can_read_and_infer
    authz = CachedAuthorizer(SubjectAccessReviewBackend(kube.api_client()))
    one, collection = Resource(ns, "phi4"), Resource(ns)
    assert decide(authz, ALICE, actions.DEPLOYMENTS_READ, one)
    assert decide(authz, ALICE, actions.DEPLOYMENTS_READ, collection)
    assert decide(authz, ALICE, actions.DATA_ACTION, one)
    assert not decide(authz, ALICE, actions.DATA_ACTION, Resource(ns, "another-deployment"))
    assert not decide(authz, ALICE, actions.DEPLOYMENTS_WRITE, one)
    assert not decide(authz, ALICE, actions.DEPLOYMENTS_DELETE, one)
    assert not decide(authz, ALICE, actions.DEPLOYMENTS_READ, Resource("default", "phi4"))   # other namespace
    for action in (actions.DEPLOYMENTS_READ, actions.DEPLOYMENTS_WRITE, actions.DEPLOYMENTS_DELETE,
                   actions.DATA_ACTION):
        assert not decide(authz, BOB, action, one)


def test_sar_answers_match_what_the_apiserver_enforces(kube, devs_can_read_and_infer):
    ns = devs_can_read_and_infer

    def can_list(user):
        api = kubernetes.client.CustomObjectsApi(kube.api_client(user))
        try:
            api.list_namespaced_custom_object(GROUP, "v1", ns, "modeldeployments")
            return True
        except kubernetes.client.ApiException as exc:
            assert exc.status == 403
            return False

    authz = CachedAuthorizer(SubjectAccessReviewBackend(kube.api_client()))
    assert can_list("alice") and decide(authz, ALICE, actions.DEPLOYMENTS_READ, Resource(ns))
    assert not can_list("bob") and not decide(authz, BOB, actions.DEPLOYMENTS_READ, Resource(ns))


def test_write_verbs_follow_the_http_method(kube, kube_namespace):
    grant(kube, kube_namespace, "patchers", [
        {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["patch"]}], {"kind": "User",
                                                                                         "name": "alice"})
    authz = CachedAuthorizer(SubjectAccessReviewBackend(kube.api_client()))
    assert decide(authz, ALICE, actions.DEPLOYMENTS_WRITE, Resource(kube_namespace, "d", verb="patch"))
    assert not decide(authz, ALICE, actions.DEPLOYMENTS_WRITE, Resource(kube_namespace, "d", verb="update"))
    assert not decide(authz, ALICE, actions.DEPLOYMENTS_WRITE, Resource(kube_namespace, verb="create"))


def test_server_identity_without_sar_permission_is_503_never_allow(kube, devs_can_read_and_infer):
    # bob may not create SubjectAccessReviews: the check cannot be made, so the answer is 503, not a guess
    authz = CachedAuthorizer(SubjectAccessReviewBackend(kube.api_client("bob")))
    with pytest.raises(RbacCheckUnavailable):
        asyncio.run(authz.authorize(ALICE, actions.DEPLOYMENTS_READ, Resource(devs_can_read_and_infer, "phi4")))


class Deployment(AuthMixin, BaseHandler):
    def get(self, ns, name):
        self.write_json({"name": name, "by": self.current_user.identity})

    delete = get


def test_http_requests_authorized_by_sar(kube, kube_namespace):
    with OidcIssuer() as issuer:
        oid = "5f0c8a52-0000-4000-8000-00000000a11c"
        grant(kube, kube_namespace, "reader", [
            {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["get"]}], {"kind": "User",
                                                                                          "name": oid})
        settings = AuthSettings(mode="entra", plane="control", tenant_id=issuer.tenant_id,
                                client_id=issuer.client_id, authority=issuer.authority, authz="sar",
                                sar_kubeconfig=kube.kubeconfig)
        app = tornado.web.Application([(r"/api/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)",
                                        Deployment)], auth=AuthService.from_settings(settings))
        with LoopbackServer(app) as server:
            url = f"{server.url}/api/v1/namespaces/{kube_namespace}/deployments/phi4"
            mine = {"Authorization": f"Bearer {issuer.mint(oid=oid)}"}
            other = {"Authorization": f"Bearer {issuer.mint()}"}
            r = requests.get(url, headers=mine)
            assert r.status_code == 200 and r.json() == {"name": "phi4", "by": oid}
            assert requests.delete(url, headers=mine).status_code == 403
            r = requests.get(url, headers=other)
            assert r.status_code == 403 and r.json()["details"] == {"code": "insufficient_permissions"}
