"""Every variant of the chart on the real test apiserver (Kubernetes 1.20): the rendered manifests applied with
server-side apply (not a dry run), and real `helm install` / `helm uninstall` releases through the Helm v4 SDK, which
discover the cluster's capabilities (policy/v1beta1 PodDisruptionBudgets on 1.20)."""
import copy
import uuid

import pytest

from tests.support import helm

pytestmark = pytest.mark.integration

VARIANTS = [pytest.param({}, id="defaults")] + [
    pytest.param(helm.load_values(path), id=path.name.removesuffix("-values.yaml")) for path in helm.CI_VALUES]
# APIs the 1.20 test apiserver does not serve: Gateway API (a CRD it has not) and policy/v1 (1.21+)
NOT_SERVED_HERE = {("gateway.networking.k8s.io/v1", "HTTPRoute"), ("policy/v1", "PodDisruptionBudget")}
KEPT_AFTER_UNINSTALL = {("Secret", "inference-operator-admin-key"), ("ConfigMap", "foundry-local-catalog")}


def isolate(values, release_ns):
    """The variant with its watched namespaces made unique to this test (the apiserver is shared by the session)."""
    values = copy.deepcopy(values)
    suffix = release_ns.rsplit("-", 1)[-1]
    watched = (values.get("watch") or {}).get("namespaces")
    if watched:
        values["watch"]["namespaces"] = [release_ns if n == helm.DEFAULT_NAMESPACE else f"{n}-{suffix}"
                                         for n in watched]
    return values


def namespaces_of(objects):
    return {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}


@pytest.mark.parametrize("values", VARIANTS)
def test_rendered_manifests_apply_server_side(kube, values):
    admin = kube.api_client()
    release_ns = f"chart-{uuid.uuid4().hex[:8]}"
    values = isolate(values, release_ns)
    rendered = helm.render(values, namespace=release_ns)
    for ns in namespaces_of(rendered.objects):
        kube.create_namespace(ns)
    served = [o for o in rendered.objects if helm.served(admin, o["apiVersion"], o["kind"])]
    skipped = {(o["apiVersion"], o["kind"]) for o in rendered.objects} - {(o["apiVersion"], o["kind"]) for o in served}
    assert skipped <= NOT_SERVED_HERE
    try:
        live = helm.server_side_apply(admin, served)
        assert len(live) == len(served)
        for obj, applied in zip(sorted(served, key=lambda o: not helm.is_hook(o)), live, strict=True):
            assert helm.key(applied) == helm.key(obj)
            managers = {m["manager"] for m in applied["metadata"]["managedFields"]}
            assert "foundry-chart-test" in managers
            assert helm.read(admin, obj)["metadata"]["uid"] == applied["metadata"]["uid"]
        # what the apiserver stored is what was rendered (defaults added, nothing dropped)
        for name in ("inference-operator", "inference-operator-api"):
            stored = helm.read(admin, rendered.get("Deployment", name))
            container = stored["spec"]["template"]["spec"]["containers"][0]
            assert container["command"] == rendered.container(name)["command"]
            assert container["securityContext"] == rendered.container(name)["securityContext"]
        # applying again changes nothing (idempotent): no new generation; objects without one keep their version
        # (controllers update a Deployment's status meanwhile, which bumps its resourceVersion but not generation)
        def version(o):
            return o["metadata"].get("generation") or o["metadata"]["resourceVersion"]

        again = helm.server_side_apply(admin, served)
        assert [version(o) for o in again] == [version(o) for o in live]
    finally:
        for obj in reversed(served):
            helm.delete(admin, obj)


@pytest.mark.parametrize("values", [v for v in VARIANTS if v.id != "gateway"])
def test_helm_install_and_uninstall(kube, values):
    admin = kube.api_client()
    release_ns = f"rel-{uuid.uuid4().hex[:8]}"
    values = isolate(values, release_ns)
    rendered = helm.render(values, namespace=release_ns)
    for ns in namespaces_of(rendered.objects):
        kube.create_namespace(ns)
    release = helm.install(kube.kubeconfig, values, namespace=release_ns)
    # what Helm applied for this cluster, plus the hooks it ran
    manifest = helm.manifest_objects(release["manifest"])
    everything = manifest + [o for o in rendered.objects if helm.is_hook(o)]
    try:
        assert release["status"] == "deployed"
        assert {helm.key(o) for o in manifest} == {helm.key(o) for o in rendered.objects if not helm.is_hook(o)}
        for obj in manifest:
            assert helm.read(admin, obj) is not None, helm.key(obj)
        pdbs = [o for o in manifest if o["kind"] == "PodDisruptionBudget"]
        assert bool(pdbs) == values.get("api", {}).get("podDisruptionBudget", {}).get("enabled", False)
        assert all(o["apiVersion"] == "policy/v1beta1" for o in pdbs)      # the 1.20 branch of the chart
        seed = values.get("catalog", {}).get("seedOnInstall", True)
        catalog = helm.read(admin, {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "foundry-local-catalog", "namespace": release_ns}})
        assert (catalog is not None) == seed                                # the pre-install hook ran
    finally:
        helm.uninstall(kube.kubeconfig, namespace=release_ns)
    left = {(o["kind"], o["metadata"]["name"]) for o in everything if helm.read(admin, o) is not None}
    assert left <= KEPT_AFTER_UNINSTALL, left
    for obj in everything:
        helm.delete(admin, obj)
