"""The chart rendered by real Helm code (Helm v4 SDK): lint, every ci/*-values.yaml variant, the contract names and
commands, the operator configuration in operator/settings.py's format, the control plane's environment, RBAC,
exposure, security settings and NOTES."""
import base64
import json
import re

import helm_python
import pytest
import yaml

from foundry_inference import catalog as catalog_mod
from foundry_inference.apps.controlplane.settings import ControlPlaneSettings, SettingsError
from foundry_inference.auth.settings import AuthSettings
from foundry_inference.operator import settings as operator_settings
from tests.support import helm

pytestmark = pytest.mark.unit

NS = helm.DEFAULT_NAMESPACE
VARIANTS = [pytest.param({}, id="defaults")] + [
    pytest.param(helm.load_values(path), id=path.name.removesuffix("-values.yaml")) for path in helm.CI_VALUES]
OPERATOR, API = "inference-operator", "inference-operator-api"
WORKLOADS = (OPERATOR, API)


@pytest.fixture(scope="module")
def defaults():
    return helm.render()


def test_there_are_ci_variants():
    assert len(helm.CI_VALUES) >= 4


@pytest.mark.parametrize("kube_version", ["v1.20.2", "v1.29.0", None])
@pytest.mark.parametrize("values", VARIANTS)
def test_lint_is_clean(values, kube_version):
    report = helm.lint(values, kube_version=kube_version)
    assert report["total_charts_linted"] == 1
    assert helm.lint_problems(report) == []


@pytest.mark.parametrize("values", VARIANTS)
def test_every_variant_renders_labelled_objects_in_known_namespaces(values):
    out = helm.render(values)
    watched = set(values.get("watch", {}).get("namespaces") or [NS])
    assert len(out.keys()) == len(out.objects), "an object is rendered twice"
    for obj in out.objects:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "foundry-inference", helm.key(obj)
        if not helm.is_hook(obj):
            assert labels["app.kubernetes.io/instance"] == helm.DEFAULT_RELEASE
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in meta
        else:
            assert meta["namespace"] in watched | {NS}, helm.key(obj)


def test_contract_names_commands_and_service(defaults):
    op = defaults.container(OPERATOR)
    assert op["command"] == ["foundry-inference", "operator", "--store", "kubernetes"]
    cp = defaults.container(API)
    assert cp["command"] == ["foundry-inference", "control-plane", "--store", "kubernetes", "--port", "8080"]
    assert cp["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                           {"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    svc = defaults.get("Service", API)
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == defaults.get("Deployment", API)["spec"]["selector"]["matchLabels"]
    for name in WORKLOADS:
        dep = defaults.get("Deployment", name)
        template_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == name
        assert defaults.get("ServiceAccount", name, NS)
    # the operator runs no leader election: exactly one, replaced rather than surged
    assert defaults.get("Deployment", OPERATOR)["spec"]["replicas"] == 1
    assert defaults.get("Deployment", OPERATOR)["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("values", VARIANTS)
def test_pods_run_restricted(values):
    out = helm.render(values)
    for name in WORKLOADS:
        pod = out.get("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is True         # both talk to the apiserver
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            # a read-only root filesystem needs a writable /tmp
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"])


def test_resources_are_left_to_the_admin_by_default(defaults):
    for name in WORKLOADS:
        assert "resources" not in defaults.container(name)
    out = helm.render(helm.load_values(helm.CHART / "ci" / "external-ingress-values.yaml"))
    assert out.container(API)["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                               "limits": {"memory": "1Gi"}}
    assert out.container(OPERATOR)["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}}


def test_control_plane_probes_and_drain(defaults):
    cp = defaults.container(API)
    assert cp["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert cp["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert cp["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # a replaced pod answers while kube-proxy takes it out of the Service (the rolling update never gaps)
    assert cp["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "3"]}}}


# --- the operator's configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("values", VARIANTS)
def test_operator_config_is_accepted_by_the_operator(values):
    out = helm.render(values)
    raw = out.operator_config()
    settings = operator_settings.from_mapping(raw)          # the operator's own loader: fails on any unknown key
    merged = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    for section, content in values.items():
        if isinstance(content, dict):
            merged[section] = {**merged[section], **content}
    expected_ns = values.get("watch", {}).get("namespaces") or [NS]
    assert settings.namespaces == tuple(expected_ns)
    assert settings.operatorNamespace == NS
    assert settings.authentication.apiKeyEnabled is merged["apiKey"]["enabled"]
    assert settings.authentication.entraEnabled is merged["entraAuth"]["enabled"]
    if settings.authentication.entraEnabled:
        assert settings.authentication.tenantId == merged["entraAuth"]["tenantId"]
        assert settings.authentication.clientId == merged["entraAuth"]["clientId"]
    assert settings.catalog.intervalSeconds == merged["catalog"]["syncIntervalSeconds"]
    assert settings.catalog.lazyRegistrationEnabled is merged["catalog"]["lazyRegistrationEnabled"]
    assert settings.storeModel.enabled is merged["storeModel"]["enabled"]
    assert settings.imagePullPolicy == merged["images"]["pullPolicy"]
    assert settings.pollIntervalSeconds == merged["operator"]["pollIntervalSeconds"]
    assert settings.tls.certValidityDays == merged["tls"]["certValidityDays"]
    assert set(settings.images) == set(operator_settings.IMAGE_ROLES)
    assert set(raw["images"]) == set(operator_settings.IMAGE_ROLES), "the chart must name an image for every role"


def test_operator_config_images_and_catalog_source(defaults):
    cfg = defaults.operator_config()
    assert cfg["images"]["generative-cpu"] == "ghcr.io/foundry-inference/foundry-inference-chat:0.1.0"
    assert cfg["images"]["predictive-gpu-byo"] == "ghcr.io/foundry-inference/foundry-inference-predictive-cuda:0.1.0"
    assert cfg["images"]["model-fetcher"] == defaults.container(OPERATOR)["image"]
    assert cfg["images"]["nginx"] == "nginxinc/nginx-unprivileged:1.27-alpine"
    assert cfg["ingress"]["annotations"] == operator_settings.DEFAULT_INGRESS_ANNOTATIONS
    # the default source is the chart's catalog, mounted into the operator from its own ConfigMap
    op = defaults.get("Deployment", OPERATOR)["spec"]["template"]["spec"]
    mount = next(m for m in op["containers"][0]["volumeMounts"] if cfg["catalog"]["source"].startswith(m["mountPath"]))
    volume = next(v for v in op["volumes"] if v["name"] == mount["name"])
    source = defaults.get("ConfigMap", volume["configMap"]["name"])
    assert cfg["catalog"]["source"] == f"{mount['mountPath']}/catalog.json"
    shipped = (helm.CHART / "files" / "catalog.json").read_text()
    assert json.loads(source["data"]["catalog.json"]) == json.loads(shipped)
    catalog_mod.parse(source["data"]["catalog.json"])
    env = defaults.env(OPERATOR)
    config_mount = next(m for m in op["containers"][0]["volumeMounts"]
                        if env["FOUNDRY_OPERATOR_CONFIG"].startswith(m["mountPath"] + "/"))
    config_volume = next(v for v in op["volumes"] if v["name"] == config_mount["name"])
    assert config_volume["configMap"]["name"] == "inference-operator-config"
    assert env["FOUNDRY_OPERATOR_CONFIG"].endswith("/config.yaml")


def test_custom_images_and_catalog_url():
    out = helm.render(helm.load_values(helm.CHART / "ci" / "entra-only-values.yaml"))
    cfg = out.operator_config()
    assert cfg["images"]["generative-cpu"] == "myregistry.azurecr.io/foundry/foundry-inference-chat:0.1.0-rc1"
    assert cfg["images"]["vllm_gpu"] == "myregistry.azurecr.io/mirror/vllm-openai:v0.6.3"
    assert cfg["catalog"]["source"] == "https://catalog.example.com/foundry/catalog.json"
    assert cfg["storeModel"] == {"enabled": True, "storageClassName": "managed-csi", "modelsVolumeSizeLimit": "40Gi",
                                 "volumeSize": "20Gi", "accessMode": "ReadWriteOnce", "fetchBackoffLimit": 4}
    for name in WORKLOADS:
        pod = out.get("Deployment", name)["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "acr-pull"}]
        assert pod["containers"][0]["image"] == "myregistry.azurecr.io/foundry/foundry-inference:0.1.0-rc1"
        assert pod["containers"][0]["imagePullPolicy"] == "Always"


def test_a_config_change_restarts_the_operator(defaults):
    before = defaults.get("Deployment", OPERATOR)["spec"]["template"]["metadata"]["annotations"]
    after = helm.render({"operator": {"workers": 2}}).get("Deployment", OPERATOR)
    assert after["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != before["checksum/config"]


# --- the control plane's environment ------------------------------------------------------------------------------
@pytest.mark.parametrize("values", VARIANTS)
def test_control_plane_environment_is_accepted_by_the_control_plane(values):
    out = helm.render(values)
    env = out.env(API)
    config = ControlPlaneSettings.from_env(env)
    auth = AuthSettings.from_env(env)
    assert config.operator_namespace == NS
    assert config.watch_namespaces == tuple(values.get("watch", {}).get("namespaces") or [NS])
    api_key = values.get("apiKey", {}).get("enabled", True)
    entra = values.get("entraAuth", {}).get("enabled", False)
    assert auth.mode == {(True, False): "api-key", (False, True): "entra", (True, True): "both"}[(api_key, entra)]
    assert auth.plane == "control"
    assert auth.authz == values.get("api", {}).get("authorization", {}).get("mode", "sar")
    mounts = {m["mountPath"]: m for m in out.container(API)["volumeMounts"]}
    if api_key:
        assert auth.admin_key_file.rsplit("/", 1)[0] in mounts
    else:
        assert auth.admin_key_file is None and "/var/run/foundry/admin" not in mounts


def test_control_plane_settings_from_values():
    out = helm.render(helm.load_values(helm.CHART / "ci" / "entra-only-values.yaml"))
    env = out.env(API)
    config = ControlPlaneSettings.from_env(env)
    assert config.registry_allowlist == ("registry.internal.example.com:5000",)
    assert config.max_body_bytes == 2097152
    auth = AuthSettings.from_env(env)
    assert auth.role_table["roles"]["Foundry.Reader"] == ["deployments/read"]
    assert auth.role_table["groups"] == {"0f6a7b8c-1d2e-4f30-9a4b-5c6d7e8f9a0b": ["deployments/*"]}
    assert env["FOUNDRY_LOG_LEVEL"] == "debug"
    azure = helm.render(helm.load_values(helm.CHART / "ci" / "azure-rbac-values.yaml"))
    auth = AuthSettings.from_env(azure.env(API))
    assert auth.authz == "azure" and auth.azure_scope.startswith("/subscriptions/")
    assert auth.azure_token_file == "/var/run/secrets/azure/tokens/arm-token" and auth.authz_cache_ttl_s == 120


def test_attack_a_gitops_render_never_regenerates_the_admin_key_silently():
    # `helm template` / Argo CD: no cluster to look the kept key up in, so a generated key would change every sync
    with pytest.raises(helm_python.HelmRenderError, match="apiKey.existingSecret"):
        helm.render({}, strict=True)
    byo = helm.render({"apiKey": {"existingSecret": "my-admin-key"}}, strict=True)
    assert ("Secret", NS, "inference-operator-admin-key") not in byo.keys()
    entra_only = helm.render(helm.load_values(helm.CHART / "ci" / "entra-only-values.yaml"), strict=True)
    assert ("Secret", NS, "inference-operator-admin-key") not in entra_only.keys()
    asked = helm.render({"apiKey": {"generateWithoutCluster": True}}, strict=True)
    assert asked.get("Secret", "inference-operator-admin-key")["data"]["admin-key"]


def test_admin_key_secret(defaults):
    secret = defaults.get("Secret", "inference-operator-admin-key")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert re.fullmatch(r"[0-9a-f]{64}", base64.b64decode(secret["data"]["admin-key"]).decode())
    assert helm.render().get("Secret", "inference-operator-admin-key")["data"] != secret["data"]   # random per install
    volume = next(v for v in defaults.get("Deployment", API)["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "admin-key")
    assert volume["secret"]["secretName"] == "inference-operator-admin-key"
    byo = helm.render({"apiKey": {"existingSecret": "my-admin-key"}})
    assert ("Secret", NS, "inference-operator-admin-key") not in byo.keys()
    volumes = byo.get("Deployment", API)["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "admin-key")
    assert volume["secret"]["secretName"] == "my-admin-key"


# --- RBAC -------------------------------------------------------------------------------------------------------
def _rules(obj):
    return [(tuple(r.get("apiGroups", [])), tuple(r.get("resources", [])), tuple(r.get("verbs", [])),
             tuple(r.get("resourceNames", []))) for r in obj.get("rules", [])]


@pytest.mark.parametrize("values", VARIANTS)
def test_rbac_is_least_privilege(values):
    out = helm.render(values)
    watched = values.get("watch", {}).get("namespaces") or [NS]
    for obj in out.of_kind("Role") + out.of_kind("ClusterRole"):
        for groups, resources, verbs, _ in _rules(obj):
            assert "*" not in groups + resources + verbs, helm.key(obj)
            assert not {"escalate", "bind", "impersonate"} & set(verbs)
            assert "namespaces" not in resources
            # pods: only the operator's read (status), its fetchers' logs (progress) and one annotation after a key
            # rotation; never create/delete/exec, never the control plane
            if "pods" in resources or "pods/log" in resources:
                assert obj["metadata"]["name"] == OPERATOR and obj["kind"] == "Role", helm.key(obj)
                assert (resources, verbs) in {(("pods",), ("get", "list", "patch")), (("pods/log",), ("get",))}
            assert not {"pods/exec", "pods/attach", "pods/portforward", "pods/status"} & set(resources)
    # the operator has no cluster-wide rights at all
    for obj in out.of_kind("ClusterRoleBinding"):
        assert [s["name"] for s in obj["subjects"]] == [API]
    for obj in out.of_kind("ClusterRole"):
        for groups, resources, verbs, _ in _rules(obj):
            allowed = {(("authorization.k8s.io",), ("subjectaccessreviews",), ("create",)),
                       (("foundrylocal.azure.com",), ("modeldeployments", "inferenceservices"), ("get", "list"))}
            assert (groups, resources, verbs) in allowed
    # a Role for each component in every watched namespace and in the release namespace, bound to its own account
    for name in WORKLOADS:
        namespaces = {o["metadata"]["namespace"] for o in out.of_kind("Role") if o["metadata"]["name"] == name}
        assert namespaces == set(watched) | {NS}
        for binding in out.of_kind("RoleBinding"):
            if binding["metadata"]["name"] == name:
                assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
                assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]


def test_rbac_follows_the_watched_namespaces():
    out = helm.render({"watch": {"namespaces": ["team-a"]}})
    op_release = _rules(out.get("Role", OPERATOR, NS))
    op_team = _rules(out.get("Role", OPERATOR, "team-a"))
    # release namespace (not watched): only the catalog ConfigMap and the CA Secret
    assert {r[1] for r in op_release} == {("configmaps",), ("secrets",), ("configmaps", "secrets")}
    assert (("",), ("configmaps",), ("get", "patch", "update"), ("foundry-local-catalog",)) in op_release
    assert (("",), ("secrets",), ("get",), ("foundry-inference-ca",)) in op_release
    assert (("apps",), ("deployments",), ("get", "list", "watch", "create", "update", "patch", "delete"), ()) in op_team
    assert (("",), ("pods",), ("get", "list", "patch"), ()) in op_team
    assert (("",), ("pods/log",), ("get",), ()) in op_team
    assert not any("pods" in r[1] for r in op_release)          # only where it runs model pods
    assert any("modeldeployments/status" in r[1] for r in op_team)
    api_team = _rules(out.get("Role", API, "team-a"))
    assert (("",), ("secrets",), ("get", "update"), ()) in api_team
    assert not any("models" in r[1] for r in api_team)
    api_release = _rules(out.get("Role", API, NS))
    assert any("models" in r[1] for r in api_release)
    assert not any("modeldeployments" in r[1] for r in api_release)


def test_the_activator_may_only_set_replicas_and_read_its_owner_in_each_watched_namespace():
    out = helm.render({"watch": {"namespaces": ["team-a", "team-b"]}})
    name = "inference-activator"
    roles = [o for o in out.of_kind("Role") if o["metadata"]["name"] == name]
    assert {o["metadata"]["namespace"] for o in roles} == {"team-a", "team-b"}      # not the release namespace
    for role in roles:
        assert _rules(role) == [(("apps",), ("deployments/scale",), ("get", "patch"), ()),
                                (("foundrylocal.azure.com",), ("modeldeployments", "inferenceservices"), ("get",), ())]
        ns = role["metadata"]["namespace"]
        assert out.get("ServiceAccount", name, ns)
        binding = out.get("RoleBinding", name, ns)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    assert not [o for o in out.of_kind("ClusterRoleBinding") if any(s["name"] == name for s in o["subjects"])]


def test_cluster_role_only_when_needed():
    assert not helm.render({"api": {"authorization": {"mode": "roles"}}, "rbac": {"clusterWideRead": False}}
                           ).of_kind("ClusterRole")
    sar_only = helm.render({"rbac": {"clusterWideRead": False}})
    assert _rules(sar_only.of_kind("ClusterRole")[0]) == [(("authorization.k8s.io",), ("subjectaccessreviews",),
                                                             ("create",), ())]
    read_only = helm.render({"api": {"authorization": {"mode": "roles"}}})
    assert _rules(read_only.of_kind("ClusterRole")[0]) == [(("foundrylocal.azure.com",),
                                                              ("modeldeployments", "inferenceservices"),
                                                              ("get", "list"), ())]
    cached = helm.render({"storeModel": {"enabled": True}}).get("Role", OPERATOR, NS)["rules"]
    assert cached[4]["resources"] == ["storemodels", "storemodels/status"]
    # the model cache's children: created and deleted, never updated
    assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in cached[5:7]] == [
        ([""], ["persistentvolumeclaims"], ["get", "list", "watch", "create", "delete"]),
        (["batch"], ["jobs"], ["get", "list", "watch", "create", "delete"])]
    assert not any("jobs" in r["resources"] or "persistentvolumeclaims" in r["resources"]
                   for r in helm.render({}).get("Role", OPERATOR, NS)["rules"])


# --- exposure, PDB, NetworkPolicy, catalog, NOTES ---------------------------------------------------------------
def test_exposure_internal_external_none(defaults):
    kinds = {k for k, _, _ in defaults.keys()}
    assert "Service" in kinds and "Ingress" not in kinds and "HTTPRoute" not in kinds
    ing = helm.render(helm.load_values(helm.CHART / "ci" / "external-ingress-values.yaml")).get("Ingress", API)
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "models.example.com"
    assert rule["http"]["paths"][0]["path"] == "/inference-api(/|$)(.*)"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": API, "port": {"name": "http"}}}
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ing["spec"]["tls"] == [{"hosts": ["models.example.com"], "secretName": "inference-api-tls"}]
    plain = helm.render({"api": {"exposure": "external", "external": {"ingress": {"className": "traefik"}}}})
    path = plain.get("Ingress", API)["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/inference-api" and path["pathType"] == "Prefix"
    assert "host" not in plain.get("Ingress", API)["spec"]["rules"][0]
    route = helm.render(helm.load_values(helm.CHART / "ci" / "gateway-values.yaml")).get("HTTPRoute", API)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway-system", "sectionName": "https"}]
    rule = route["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/inference-api"}}]
    assert rule["filters"][0]["urlRewrite"] == {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}
    assert rule["backendRefs"] == [{"name": API, "port": 8080}]
    none = helm.render({"api": {"exposure": "none"}})
    assert not {k for k in none.keys() if k[0] in ("Service", "Ingress", "HTTPRoute")}
    assert ("Deployment", NS, API) in none.keys()
    assert "port-forward deploy/inference-operator-api" in none.notes


def test_pod_disruption_budget():
    assert not helm.render().of_kind("PodDisruptionBudget")
    pdb = helm.render({"api": {"replicas": 3, "podDisruptionBudget": {"enabled": True, "minAvailable": 2}}}
                      ).get("PodDisruptionBudget", API)
    # offline rendering assumes a current cluster; on 1.20 the release uses policy/v1beta1 (tests/integration)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "control-plane"


def test_network_policies():
    assert not helm.render().of_kind("NetworkPolicy")
    out = helm.render(helm.load_values(helm.CHART / "ci" / "external-ingress-values.yaml"))
    api = out.get("NetworkPolicy", API)
    assert api["spec"]["policyTypes"] == ["Ingress"]
    assert api["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}], "from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
        {"ports": [{"port": "metrics", "protocol": "TCP"}]}]        # metrics.scrapeFrom empty: any scraper
    op = out.get("NetworkPolicy", OPERATOR)
    assert op["spec"]["policyTypes"] == ["Ingress"]
    assert op["spec"]["ingress"] == [{"ports": [{"port": "health", "protocol": "TCP"}]}]
    values = helm.load_values(helm.CHART / "ci" / "external-ingress-values.yaml")
    values["metrics"] = {"enabled": False}
    off = helm.render(values)
    assert "ingress" not in off.get("NetworkPolicy", OPERATOR)["spec"]
    assert len(off.get("NetworkPolicy", API)["spec"]["ingress"]) == 1
    assert op["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def test_catalog_seed_is_a_pre_install_hook(defaults):
    seed = defaults.get("ConfigMap", "foundry-local-catalog")
    annotations = seed["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    # labelled like the operator's own catalog ConfigMap, which it becomes after the first sync
    assert seed["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "inference-operator"
    assert json.loads(seed["data"]["catalog.json"]) == json.loads((helm.CHART / "files" / "catalog.json").read_text())
    assert ("ConfigMap", NS, "foundry-local-catalog") not in helm.render({"catalog": {"seedOnInstall": False}}).keys()


def test_notes_tell_how_to_reach_the_api_and_get_a_credential(defaults):
    notes = defaults.notes
    assert "kubectl -n foundry-local-operator port-forward svc/inference-operator-api 8080:8080" in notes
    assert "get secret inference-operator-admin-key -o jsonpath='{.data.admin-key}'" in notes
    assert "http://inference-operator-api.foundry-local-operator.svc:8080" in notes
    entra = helm.render(helm.load_values(helm.CHART / "ci" / "entra-sar-values.yaml")).notes
    assert "az account get-access-token --scope api://6e5a1b2c-3d4e-4f50-8a9b-0c1d2e3f4a5b/foundry_access" in entra
    assert "--user=<object id>" in entra
    external = helm.render(helm.load_values(helm.CHART / "ci" / "external-ingress-values.yaml")).notes
    assert "export FOUNDRY_API=https://models.example.com/inference-api" in external
    gateway = helm.render(helm.load_values(helm.CHART / "ci" / "gateway-values.yaml")).notes
    assert "export FOUNDRY_API=https://models.example.com/inference-api" in gateway


@pytest.mark.parametrize("values", VARIANTS)
def test_env_names_are_unique(values):
    out = helm.render(values)
    for name in WORKLOADS:
        names = [e["name"] for e in out.container(name)["env"]]
        assert len(names) == len(set(names)), names      # server-side apply refuses duplicate keys


def test_extra_env_replaces_a_chart_variable():
    out = helm.render({"api": {"extraEnv": [{"name": "FOUNDRY_AUTHZ", "value": "roles"},
                                            {"name": "FOUNDRY_ENTRA_LEEWAY_S", "value": "30"}]},
                       "operator": {"extraEnv": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {
                           "name": "s", "key": "k"}}}]}})
    env = out.env(API)
    assert env["FOUNDRY_AUTHZ"] == "roles" and env["FOUNDRY_ENTRA_LEEWAY_S"] == "30"
    assert out.container(OPERATOR)["env"][-1] == {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                                                  "key": "k"}}}


def test_read_cache_setting_reaches_the_control_plane_with_the_watch_it_needs():
    on = helm.render({})
    assert ControlPlaneSettings.from_env(on.env(API)).read_cache is True
    role_verbs = [set(verbs) for _groups, resources, verbs, _ in _rules(on.get("Role", API, NS))
                  if "modeldeployments" in resources]
    assert role_verbs and all("watch" in verbs for verbs in role_verbs)
    off = helm.render({"api": {"config": {"readCache": False}}})
    assert ControlPlaneSettings.from_env(off.env(API)).read_cache is False
    with pytest.raises(SettingsError, match="FOUNDRY_READ_CACHE"):
        ControlPlaneSettings.from_env({"FOUNDRY_READ_CACHE": "sometimes"})


def test_operator_probes_point_at_the_port_the_operator_serves_them_on():
    out = helm.render({})
    container = out.container(OPERATOR)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert out.env(OPERATOR)["FOUNDRY_OPERATOR_HEALTH_PORT"] == str(port)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_live_catalog_values_reach_the_operator_settings():
    settings = operator_settings.from_mapping(helm.render({}).operator_config())
    assert settings.catalog.sourceType == "configmap"                   # air-gapped by default
    assert settings.catalog.azureRegistryUrl == "https://{region}.api.azureml.ms"
    assert settings.catalog.azureRegion is None
    out = helm.render({"catalog": {"sourceType": "azure", "azure": {
        "catalogUrl": "https://mirror.example.com/{region}/ux/v1.0", "registryUrl": "https://{region}.mirror.example.com",
        "region": "westeurope"}}})
    settings = operator_settings.from_mapping(out.operator_config())
    assert settings.catalog.sourceType == "azure" and settings.catalog.azureRegion == "westeurope"
    assert settings.catalog.azureCatalogUrl == "https://mirror.example.com/{region}/ux/v1.0"
    assert settings.catalog.azureRegistryUrl == "https://{region}.mirror.example.com"


def test_metrics_annotations_and_optional_prometheus_operator_objects(defaults):
    api = defaults.get("Deployment", API)["spec"]["template"]
    assert api["metadata"]["annotations"]["prometheus.io/port"] == "9464"
    env = {e["name"]: e.get("value") for e in api["spec"]["containers"][0]["env"]}
    assert env["FOUNDRY_METRICS_PORT"] == "9464"
    op = defaults.get("Deployment", OPERATOR)["spec"]["template"]["metadata"]["annotations"]
    assert op["prometheus.io/scrape"] == "true" and op["prometheus.io/port"] == "8081"
    # the API Service never carries the metrics port
    assert [p["name"] for p in defaults.get("Service", API)["spec"]["ports"]] == ["http"]
    assert not defaults.of_kind("ServiceMonitor") and not defaults.of_kind("PodMonitor")

    out = helm.render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                                   "podMonitor": {"enabled": True}},
                       "watch": {"namespaces": ["team-a", "team-b"]}})
    (monitor,) = out.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    services = {s["metadata"]["name"]: s for s in out.of_kind("Service")
                if s["metadata"]["labels"].get("foundry.azure.com/metrics") == "true"}
    assert {n: s["spec"]["ports"][0]["targetPort"] for n, s in services.items()} == {
        f"{API}-metrics": "metrics", f"{OPERATOR}-metrics": "health"}
    assert all(s["spec"]["clusterIP"] == "None" for s in services.values())
    (pods,) = out.of_kind("PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert pods["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "model-server"
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    off = helm.render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    assert not off.of_kind("ServiceMonitor")
    assert "annotations" not in off.get("Deployment", API)["spec"]["template"]["metadata"]


def test_network_policies_admit_the_operator_to_the_model_pods_metrics_and_anyone_to_https():
    values = helm.load_values(helm.CHART / "ci" / "external-ingress-values.yaml")
    values["metrics"] = {"enabled": True, "scrapeFrom": [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]}
    out = helm.render(values)
    operator_peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                     "podSelector": {"matchLabels": {"app.kubernetes.io/name": "foundry-inference",
                                                     "app.kubernetes.io/instance": "foundry-inference",
                                                     "app.kubernetes.io/component": "operator"}}}
    for ns in ("team-a", "team-b"):
        models = out.get("NetworkPolicy", "inference-model-servers", ns)
        assert models["spec"]["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/managed-by": "inference-operator", "app.kubernetes.io/component": "model-server"}
        assert models["spec"]["ingress"] == [
            {"ports": [{"port": "https", "protocol": "TCP"}]},                   # a policy isolates every port
            {"ports": [{"port": "metrics", "protocol": "TCP"}],
             "from": [operator_peer, {"namespaceSelector": {"matchLabels": {"team": "obs"}}}]}]
        activators = out.get("NetworkPolicy", "inference-activators", ns)
        assert activators["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "activator"
        assert activators["spec"]["ingress"] == [{"ports": [{"port": "https", "protocol": "TCP"}]}]
    values["metrics"] = {"enabled": False}
    off = helm.render(values).get("NetworkPolicy", "inference-model-servers", "team-a")
    assert off["spec"]["ingress"][1]["from"] == [operator_peer]                # the autoscaler still reads them
    values["metrics"] = {"enabled": True, "scrapeFrom": []}
    anyone = helm.render(values).get("NetworkPolicy", "inference-model-servers", "team-a")
    assert "from" not in anyone["spec"]["ingress"][1]                          # any scraper, as for the platform
    assert not [o for o in helm.render().of_kind("NetworkPolicy")]
