"""The platform running under the chart's own ServiceAccounts and RBAC on the real test apiserver.

The chart is installed by real Helm code (Helm v4 SDK, server-side apply). The operator and the control plane then run
as local processes exactly as their pods would: the command, environment and mounted ConfigMaps/Secrets of the live
Deployments, and a token of the chart's ServiceAccount from the TokenRequest API in place of the in-cluster token. A
ModelDeployment created through the API must reach all its children and `Running` with no RBAC denial, and token
callers are authorized by SubjectAccessReview: a user without the right role is refused.
"""
import base64
import uuid

import kubernetes
import pytest
import requests

from tests.support import helm
from tests.support.oidc_issuer import OidcIssuer
from tests.support.procs import free_port, wait_http

pytestmark = pytest.mark.integration

GROUP = "foundrylocal.azure.com"
RELEASE_NS = helm.DEFAULT_NAMESPACE
DEPLOYER, READER, STRANGER = (str(uuid.uuid4()) for _ in range(3))
DENIALS = ("forbidden", "Forbidden", "HTTP 403", "is not allowed", "cannot list", "cannot create", "cannot patch")


def grant(api_client, namespace, name, verbs, user, key_verbs=()):
    rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
    rules = [{"apiGroups": [GROUP], "resources": ["modeldeployments"], "verbs": verbs}]
    if key_verbs:               # a deployment's keys are a subresource of their own (docs/security.md)
        rules.append({"apiGroups": [GROUP], "resources": ["modeldeployments/keys"], "verbs": list(key_verbs)})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})


def make_ready(api_client, namespace, name, timeout=60):
    """Mark the Deployment's pods Ready, as a kubelet would; the real deployment controller does the rest."""
    core = kubernetes.client.CoreV1Api(api_client)
    apps = kubernetes.client.AppsV1Api(api_client)

    def done():
        for pod in core.list_namespaced_pod(namespace, label_selector=f"foundry.azure.com/deployment={name}").items:
            if pod.metadata.deletion_timestamp is None and not any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
                    "phase": "Running", "conditions": [{"type": "Ready", "status": "True"},
                                                       {"type": "ContainersReady", "status": "True"}]}})
        dep = apps.read_namespaced_deployment(name, namespace)
        return (dep.status.ready_replicas or 0) == dep.spec.replicas and \
            (dep.status.observed_generation or 0) >= dep.metadata.generation

    helm.wait_for(done, timeout, f"Deployment {namespace}/{name} ready", interval=0.5)


def mdep_status(api_client, namespace, name):
    api = kubernetes.client.CustomObjectsApi(api_client)
    return api.get_namespaced_custom_object(GROUP, "v1", namespace, "modeldeployments", name).get("status") or {}


def children(api_client, namespace, name):
    core = kubernetes.client.CoreV1Api(api_client)
    apps = kubernetes.client.AppsV1Api(api_client)
    selector = f"app.kubernetes.io/managed-by=inference-operator,foundry.azure.com/deployment={name}"
    found = set()
    for kind, lister in (("Deployment", apps.list_namespaced_deployment), ("Service", core.list_namespaced_service),
                         ("ConfigMap", core.list_namespaced_config_map), ("Secret", core.list_namespaced_secret)):
        found |= {(kind, o.metadata.name) for o in lister(namespace, label_selector=selector).items}
    return found


@pytest.fixture
def installed(kube):
    """The chart installed in foundry-local-operator, watching it and one team namespace, Entra ID + API keys, SAR."""
    admin = kube.api_client()
    kube.create_namespace(RELEASE_NS)
    team = kube.create_namespace(f"team-{uuid.uuid4().hex[:8]}")
    with OidcIssuer() as issuer:
        values = {
            "watch": {"namespaces": [RELEASE_NS, team]},
            "apiKey": {"enabled": True},
            "entraAuth": {"enabled": True, "tenantId": issuer.tenant_id, "clientId": issuer.client_id,
                          "authority": issuer.authority},
            "api": {"authorization": {"mode": "sar", "denyCacheTtlSeconds": 0}},
            "operator": {"pollIntervalSeconds": 0.5},
        }
        release = helm.install(kube.kubeconfig, values, namespace=RELEASE_NS)
        assert release["status"] == "deployed"
        try:
            yield issuer, team, release
        finally:
            helm.uninstall(kube.kubeconfig, namespace=RELEASE_NS)
            # what an uninstall keeps (CRD objects, admin key, catalog, CA), so the namespace is clean again
            for ns in (RELEASE_NS, team):
                kubernetes.client.CustomObjectsApi(admin).delete_collection_namespaced_custom_object(
                    GROUP, "v1", ns, "modeldeployments")
            for kind, name in (("Secret", "inference-operator-admin-key"), ("Secret", "foundry-inference-ca"),
                               ("ConfigMap", "foundry-local-catalog")):
                helm.delete(admin, {"apiVersion": "v1", "kind": kind, "metadata": {"name": name,
                                                                                    "namespace": RELEASE_NS}})


@pytest.fixture
def platform(kube, installed, tmp_path):
    """The operator and the control plane, run from their live Deployments under their ServiceAccounts' tokens."""
    issuer, team, release = installed
    admin = kube.api_client()
    operator_kc = helm.sa_kubeconfig(kube, RELEASE_NS, "inference-operator")
    api_kc = helm.sa_kubeconfig(kube, RELEASE_NS, "inference-operator-api")
    port, probe_port = free_port(), free_port()
    operator = helm.PodProcess(admin, RELEASE_NS, "inference-operator", kubeconfig=operator_kc,
                               extra_env={"FOUNDRY_OPERATOR_HEALTH_PORT": str(probe_port)},
                               workdir=tmp_path / "operator")
    operator.probe_url = f"http://127.0.0.1:{probe_port}"
    api = helm.PodProcess(admin, RELEASE_NS, "inference-operator-api", kubeconfig=api_kc,
                          args_override={"--port": str(port)}, extra_args=["--address", "127.0.0.1"],
                          # the in-cluster token the SubjectAccessReviews are made with
                          extra_env={"FOUNDRY_AUTHZ_SAR_KUBECONFIG": api_kc}, workdir=tmp_path / "api")
    with operator, api:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/readyz", timeout=30, proc=api.proc)
        except (RuntimeError, TimeoutError):
            raise AssertionError(f"control plane did not start:\n{api.log()}") from None
        yield issuer, team, url, operator, api
    assert operator.proc.returncode is not None and api.proc.returncode is not None


def test_the_chart_runs_the_platform_with_least_privilege(kube, platform):
    issuer, team, url, operator, api = platform
    admin = kube.api_client()
    grant(admin, team, "deployer", ["get", "list", "create", "update", "patch", "delete"], DEPLOYER,
          key_verbs=("get", "update"))
    grant(admin, team, "reader", ["get", "list"], READER)
    as_user = {who: {"Authorization": f"Bearer {issuer.mint(oid=who)}"} for who in (DEPLOYER, READER, STRANGER)}
    deployments = f"{url}/api/v1/namespaces/{team}/deployments"
    body = {"name": "phi", "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}}

    # users without the right role are refused by the control plane (SubjectAccessReview says no)
    r = requests.get(deployments, headers=as_user[STRANGER], timeout=10)
    assert r.status_code == 403 and r.json()["details"] == {"code": "insufficient_permissions"}, r.text
    r = requests.post(deployments, json=body, headers=as_user[READER], timeout=10)
    assert r.status_code == 403 and r.json()["details"] == {"code": "insufficient_permissions"}, r.text
    assert requests.get(deployments, timeout=10).status_code == 401
    # ... and a user with it is let through
    r = requests.post(deployments, json=body, headers=as_user[DEPLOYER], timeout=10)
    assert r.status_code == 201, r.text
    r = requests.get(deployments, headers=as_user[READER], timeout=10)
    assert r.status_code == 200 and [d["name"] for d in r.json()["deployments"]] == ["phi"]
    # writes outside the watched namespaces are refused: no operator would reconcile them
    r = requests.post(f"{url}/api/v1/namespaces/default/deployments", json=body, headers=as_user[DEPLOYER],
                      timeout=10)
    assert r.status_code in (400, 403), r.text

    # the admin key from the chart's Secret; the catalog seeded by the chart and synced by the operator
    secret = kubernetes.client.CoreV1Api(admin).read_namespaced_secret("inference-operator-admin-key", RELEASE_NS)
    admin_key = {"api-key": base64.b64decode(secret.data["admin-key"]).decode()}
    r = requests.get(f"{url}/api/v1/models", headers=admin_key, timeout=10)
    assert r.status_code == 200 and "phi-4-mini" in r.text, r.text
    r = requests.post(f"{url}/api/v1/namespaces/{RELEASE_NS}/deployments", headers=admin_key, timeout=10,
                      json={"name": "local", "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}})
    assert r.status_code == 201, r.text

    # the operator, with only its Roles, builds every child in both watched namespaces
    expected = {("Deployment", "phi"), ("Service", "phi"), ("ConfigMap", "phi-nginx")}
    helm.wait_for(lambda: expected <= children(admin, team, "phi"), 60, "children of phi")
    helm.wait_for(lambda: ("Deployment", "local") in children(admin, RELEASE_NS, "local"), 60, "children of local")
    helm.wait_for(lambda: mdep_status(admin, team, "phi").get("state") == "Creating", 30, "phi Creating")
    make_ready(admin, team, "phi")
    helm.wait_for(lambda: mdep_status(admin, team, "phi").get("state") == "Running", 60, "phi Running")
    helm.wait_for(lambda: ("Secret", "phi-api-keys") in children(admin, team, "phi"), 30, "keys Secret")
    status = mdep_status(admin, team, "phi")
    assert status["authentication"]["keysSecretName"] == "phi-api-keys"
    # the control plane's read of one deployment (its watch cache, under its own Role) follows the operator
    helm.wait_for(lambda: requests.get(f"{deployments}/phi", headers=as_user[READER], timeout=10)
                  .json()["status"]["state"] == "Running", 10, "GET phi shows Running")
    # the operator's probes, as the kubelet calls them
    assert requests.get(f"{operator.probe_url}/healthz", timeout=5).json()["status"] == "healthy"
    assert requests.get(f"{operator.probe_url}/readyz", timeout=5).status_code == 200

    # keys through the API: the control plane reads and rotates the Secret with its own Role
    r = requests.get(f"{deployments}/phi/keys", headers=as_user[DEPLOYER], timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(f"{deployments}/phi/keys/primary/rotate", headers=as_user[DEPLOYER], timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(f"{deployments}/phi/keys/primary/rotate", headers=as_user[READER], timeout=10)
    assert r.status_code == 403, r.text
    r = requests.get(f"{deployments}/phi/keys", headers=as_user[READER], timeout=10)     # get on the deployment only
    assert r.status_code == 403, r.text

    # the operator wrote the catalog ConfigMap and its CA Secret in the release namespace
    core = kubernetes.client.CoreV1Api(admin)
    catalog = core.read_namespaced_config_map("foundry-local-catalog", RELEASE_NS)
    assert "foundry.azure.com/last-sync" in (catalog.metadata.annotations or {})
    assert core.read_namespaced_secret("foundry-inference-ca", RELEASE_NS)

    # deleting through the API: 202, and the garbage collector takes the children
    r = requests.delete(f"{deployments}/phi", headers=as_user[DEPLOYER], timeout=10)
    assert r.status_code == 202, r.text
    helm.wait_for(lambda: not children(admin, team, "phi"), 60, "children of phi collected")

    # nothing the platform did was denied by the apiserver
    for proc in (operator, api):
        assert proc.running(), proc.log()[-3000:]
        log = proc.log()
        # the access log's 401/403 answers are the control plane refusing the test's users, as intended
        lines = [line for line in log.splitlines() if '"tornado.access"' not in line]
        assert not [line for line in lines if any(d in line for d in DENIALS)], log[-5000:]
    assert "reconcile failed" not in operator.log() and "reconcile crashed" not in operator.log()


def can(api_client, service_account, verb, resource, namespace=None, group="", subresource=None, name=None):
    """What the apiserver's RBAC authorizer answers for a ServiceAccount of the release."""
    attrs = {"verb": verb, "resource": resource, "group": group}
    for key, value in (("namespace", namespace), ("subresource", subresource), ("name", name)):
        if value:
            attrs[key] = value
    review = kubernetes.client.AuthorizationV1Api(api_client).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": f"system:serviceaccount:{RELEASE_NS}:{service_account}",
                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NS}"],
                 "resourceAttributes": attrs}})
    return review.status.allowed


def test_service_accounts_get_no_more_than_they_need(kube, installed):
    _issuer, team, _release = installed
    admin = kube.api_client()
    op, api = "inference-operator", "inference-operator-api"
    # the operator: its children and its resources' status in watched namespaces, nothing elsewhere
    assert can(admin, op, "create", "deployments", team, "apps")
    assert can(admin, op, "patch", "modeldeployments", team, GROUP, "status")
    assert can(admin, op, "delete", "secrets", team)
    assert not can(admin, op, "update", "secrets", team)
    assert can(admin, op, "watch", "secrets", team)                                 # a rotation wakes it at once
    assert not can(admin, op, "watch", "secrets", "default")
    # the model pods: read (status), their fetcher's log (progress), one annotation after a rotation; never more
    assert can(admin, op, "list", "pods", team) and can(admin, op, "patch", "pods", team)
    assert can(admin, op, "get", "pods", team, subresource="log")
    assert not can(admin, op, "delete", "pods", team) and not can(admin, op, "update", "pods", team)
    assert not can(admin, op, "create", "pods", team, subresource="exec")
    assert not can(admin, op, "patch", "pods", team, subresource="status")
    assert not can(admin, op, "list", "pods", "default")
    assert not can(admin, api, "list", "pods", team) and not can(admin, api, "patch", "pods", team)
    assert not can(admin, op, "update", "modeldeployments", team, GROUP)          # the spec is the user's
    assert not can(admin, op, "list", "secrets", "default")
    assert not can(admin, op, "list", "deployments", None, "apps")                 # no cluster-wide rights
    assert not can(admin, op, "create", "pods", team)
    assert not can(admin, op, "create", "subjectaccessreviews", None, "authorization.k8s.io")
    assert can(admin, op, "patch", "configmaps", RELEASE_NS, name="foundry-local-catalog")
    # the control plane: the API's resources, keys and SubjectAccessReviews; never the children
    assert can(admin, api, "create", "modeldeployments", team, GROUP)
    assert can(admin, api, "update", "secrets", team)
    assert can(admin, api, "create", "subjectaccessreviews", None, "authorization.k8s.io")
    assert can(admin, api, "list", "modeldeployments", None, GROUP)                # GET /api/v1/deployments
    assert not can(admin, api, "create", "modeldeployments", "default", GROUP)     # unwatched namespace
    assert not can(admin, api, "patch", "modeldeployments", team, GROUP, "status")  # status is the operator's
    assert not can(admin, api, "create", "deployments", team, "apps")
    assert not can(admin, api, "list", "secrets", "default")
    assert not can(admin, api, "list", "secrets", team) and not can(admin, api, "delete", "secrets", team)
    assert not can(admin, api, "create", "models", team, GROUP)                   # BYO models: release ns only
    assert can(admin, api, "create", "models", RELEASE_NS, GROUP)
