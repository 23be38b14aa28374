"""`helm upgrade` on the real test apiserver: old values, then new values, applied in order by the Helm v4 SDK.
Whatever the new values no longer render is deleted (nothing orphaned), everything they render is live, and what
must survive an upgrade does: the admin key, the synced catalog, the users' ModelDeployments."""
import uuid

import kubernetes
import pytest

from tests.support import helm

pytestmark = pytest.mark.integration

LABELLED_KINDS = [("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ServiceAccount"),
                  ("apps/v1", "Deployment"), ("networking.k8s.io/v1", "Ingress"),
                  ("networking.k8s.io/v1", "NetworkPolicy"), ("policy/v1beta1", "PodDisruptionBudget"),
                  ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                  ("rbac.authorization.k8s.io/v1", "ClusterRole"),
                  ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")]


def keys(objects):
    return {helm.key(o) for o in objects if not helm.is_hook(o)}


def test_upgrade_applies_the_new_values_and_orphans_nothing(kube):
    admin = kube.api_client()
    suffix = uuid.uuid4().hex[:8]
    release, release_ns = f"fi-{suffix}", f"upg-{suffix}"
    team_a, team_b = f"team-a-{suffix}", f"team-b-{suffix}"
    for ns in (release_ns, team_a, team_b):
        kube.create_namespace(ns)
    old = {"watch": {"namespaces": [release_ns, team_a]},
           "api": {"exposure": "external", "replicas": 2, "podDisruptionBudget": {"enabled": True},
                   "external": {"ingress": {"host": "models.example.com"}}},
           "networkPolicy": {"enabled": True}}
    new = {"watch": {"namespaces": [release_ns, team_b]},
           "api": {"exposure": "internal", "authorization": {"mode": "roles"}},
           "rbac": {"clusterWideRead": False},
           "operator": {"workers": 2}}
    core = kubernetes.client.CoreV1Api(admin)
    custom = kubernetes.client.CustomObjectsApi(admin)
    selector = f"app.kubernetes.io/instance={release}"

    first = helm.install(kube.kubeconfig, old, release=release, namespace=release_ns)
    try:
        old_keys = keys(helm.manifest_objects(first["manifest"]))
        assert helm.labelled(admin, selector, LABELLED_KINDS) == old_keys
        admin_key = core.read_namespaced_secret("inference-operator-admin-key", release_ns).data
        catalog_uid = core.read_namespaced_config_map("foundry-local-catalog", release_ns).metadata.uid
        template = kubernetes.client.AppsV1Api(admin).read_namespaced_deployment("inference-operator", release_ns)
        checksum = template.spec.template.metadata.annotations["checksum/config"]
        custom.create_namespaced_custom_object("foundrylocal.azure.com", "v1", team_a, "modeldeployments", {
            "apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment", "metadata": {"name": "users"},
            "spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}})

        second = helm.upgrade(kube.kubeconfig, new, release=release, namespace=release_ns)
        assert second["revision"] == 2 and second["status"] == "deployed"
        new_keys = keys(helm.manifest_objects(second["manifest"]))
        # what the offline renders of old and new say must go is exactly what went
        rendered_old = keys(helm.render(old, release=release, namespace=release_ns).objects)
        rendered_new = keys(helm.render(new, release=release, namespace=release_ns).objects)
        assert rendered_new == new_keys
        gone = old_keys - new_keys
        assert {k[0] for k in gone} >= {"Ingress", "PodDisruptionBudget", "NetworkPolicy", "Role", "RoleBinding"}
        assert {k for k in rendered_old - rendered_new} == gone
        assert {(k[0], k[1]) for k in gone if k[0] == "Role"} == {("Role", team_a)}
        # nothing orphaned: every live object of the release is one the new revision renders, and all of them are live
        assert helm.labelled(admin, selector, LABELLED_KINDS) == new_keys
        # the ClusterRole lost the cross-namespace read and SubjectAccessReviews (roles mode, clusterWideRead off)
        assert not [k for k in new_keys if k[0].startswith("Cluster")]
        # what must survive an upgrade did
        assert core.read_namespaced_secret("inference-operator-admin-key", release_ns).data == admin_key
        assert core.read_namespaced_config_map("foundry-local-catalog", release_ns).metadata.uid == catalog_uid
        assert custom.get_namespaced_custom_object("foundrylocal.azure.com", "v1", team_a, "modeldeployments",
                                                   "users")
        operator = kubernetes.client.AppsV1Api(admin).read_namespaced_deployment("inference-operator", release_ns)
        assert operator.spec.template.metadata.annotations["checksum/config"] != checksum   # the operator restarts
        config = core.read_namespaced_config_map("inference-operator-config", release_ns).data["config.yaml"]
        assert team_b in config and team_a not in config and "workers: 2" in config
    finally:
        helm.uninstall(kube.kubeconfig, release=release, namespace=release_ns)
    # after uninstall only what is meant to stay is left
    left = helm.labelled(admin, selector, LABELLED_KINDS)
    assert left == {("Secret", release_ns, "inference-operator-admin-key")}, left
    assert core.read_namespaced_config_map("foundry-local-catalog", release_ns)
    core.delete_namespaced_secret("inference-operator-admin-key", release_ns)
