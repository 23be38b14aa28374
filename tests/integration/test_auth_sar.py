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


def keys_store(store, namespace, name):
    """A deployment and the keys Secret the operator writes for it, in the embedded store the control plane reads."""
    dep = store.create({"apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment",
                        "metadata": {"name": name, "namespace": namespace},
                        "spec": {"model": {"ref": "m"}, "compute": "cpu"}})
    store.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": f"{name}-api-keys", "namespace": namespace, "ownerReferences": [
                      {"apiVersion": dep["apiVersion"], "kind": "ModelDeployment", "name": name,
                       "uid": dep["metadata"]["uid"], "controller": True}]},
                  "data": {"primary-key": "cGs=", "secondary-key": "c2s="}})


def test_attack_get_on_modeldeployments_does_not_reveal_keys(kube, kube_namespace, embedded_store):
    # `get modeldeployments` is a reader's grant; the keys are a subresource of their own (`modeldeployments/keys`)
    from foundry_inference.apps.controlplane.app import make_app
    from foundry_inference.apps.controlplane.settings import ControlPlaneSettings
    from tests.support.servers import ThreadedServer
    reader, keyholder = "5f0c8a52-0000-4000-8000-0000000000a1", "5f0c8a52-0000-4000-8000-0000000000a2"
    grant(kube, kube_namespace, "readers", [
        {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["get", "list"]}],
        {"kind": "User", "name": reader})
    grant(kube, kube_namespace, "keyholders", [
        {"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": ["get"]},
        {"apiGroups": [GROUP], "resources": ["modeldeployments/keys"], "verbs": ["get"]}],
        {"kind": "User", "name": keyholder})
    keys_store(embedded_store, kube_namespace, "phi4")
    with OidcIssuer() as issuer:
        settings = AuthSettings(mode="entra", plane="control", tenant_id=issuer.tenant_id,
                                client_id=issuer.client_id, authority=issuer.authority, authz="sar",
                                sar_kubeconfig=kube.kubeconfig)
        server = ThreadedServer(lambda: make_app(embedded_store, ControlPlaneSettings(),
                                                 auth=AuthService.from_settings(settings))).start()
        try:
            base = f"{server.url}/api/v1/namespaces/{kube_namespace}/deployments/phi4"
            as_reader = {"Authorization": f"Bearer {issuer.mint(oid=reader)}"}
            as_keyholder = {"Authorization": f"Bearer {issuer.mint(oid=keyholder)}"}
            assert requests.get(base, headers=as_reader, timeout=10).status_code == 200
            denied = requests.get(base + "/keys", headers=as_reader, timeout=10)
            assert denied.status_code == 403 and "listKeys" in denied.json()["message"]
            assert "cGs" not in denied.text
            assert requests.post(base + "/keys/primary/rotate", headers=as_reader, timeout=10).status_code == 403
            allowed = requests.get(base + "/keys", headers=as_keyholder, timeout=10)
            assert allowed.status_code == 200 and allowed.json()["primaryKey"]["value"] == "pk"
            # rotating is `update` on the subresource, which the key holder was not given
            assert requests.post(base + "/keys/primary/rotate", headers=as_keyholder, timeout=10).status_code == 403
        finally:
            server.stop()
