"""The desired children as pure data: golden manifests for representative deployments, and the rules behind them."""
import json

import pytest

from foundry_inference import catalog as catalog_mod
from foundry_inference.operator import names
from foundry_inference.operator import settings as settings_mod
from foundry_inference.operator import spec as spec_mod
from foundry_inference.operator.builders import deployment as dep_builder
from foundry_inference.operator.builders import ingress, keys, nginx, service, tls
from foundry_inference.operator.builders import model as model_builder
from foundry_inference.operator.reconcile_deployment import DeploymentReconciler, PassContext
from foundry_inference.operator.resolve import resolve
from foundry_inference.operator.settings import default_catalog_source

from . import golden
from .factories import NOW, fixed_uuid, isvc, mdep

pytestmark = pytest.mark.unit

UID = "11111111-2222-3333-4444-555555555555"
CATALOG = catalog_mod.Catalog(catalog_mod.parse(open(default_catalog_source(), "rb").read()))


@pytest.fixture
def fixed_tls(monkeypatch):
    monkeypatch.setattr(tls, "issue", lambda *a, **k: (b"-----BEGIN CERTIFICATE-----\nTEST\n", b"-----KEY-----\n"))


def owned(obj, kind="ModelDeployment", generation=1):
    obj = json.loads(json.dumps(obj))
    obj["kind"] = kind
    obj["metadata"].update(uid=UID, generation=generation)
    return obj


def build(obj, settings=None, models=None):
    settings = settings or settings_mod.from_mapping({})
    owner = spec_mod.Owner.of(obj)
    spec = spec_mod.validate(spec_mod.normalise(obj))
    resolved = resolve(spec, settings, CATALOG, models or {})
    ctx = PassContext(catalog=CATALOG, ca_cert=b"-----BEGIN CERTIFICATE-----\nCA\n", ca_key=b"k", now=NOW)
    return DeploymentReconciler(None, settings).desired(owner, spec, resolved, {}, ctx), resolved


def test_catalog_cpu_deployment_with_endpoint_matches_golden(fixed_tls):
    obj = owned(mdep("phi4-mini-deploy", "team-a", replicas=2, env=[{"name": "LOG_LEVEL", "value": "debug"}],
                     resources={"requests": {"cpu": "2000m", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}},
                     endpoint={"enabled": True, "host": "models.example.com", "tls": {"enabled": True}}))
    children, resolved = build(obj)
    assert resolved.name == "Phi-4-mini-instruct-generic-cpu:5" and resolved.role == "generative-cpu"
    golden.check("catalog-cpu-generative", children)
    keys_secret = keys.secret(spec_mod.Owner.of(obj), NOW, uuid4=fixed_uuid())
    golden.check("api-keys-secret", [keys_secret])


def test_vllm_gpu_deployment_matches_golden(fixed_tls):
    obj = owned(mdep("phi-vllm", "team-a", model={"catalog": {"name": "Phi-4-mini-instruct"}}, compute="gpu",
                     runtime="vllm", resources={"limits": {"gpu": 2}}, nodeSelector={"gpu": "a100"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     vllm={"preferences": {"max_model_len": 4096, "enforce_eager": True, "trust_remote_code": True,
                                           "disable_log_stats": False}, "modelCacheStorageGi": 50}))
    children, resolved = build(obj)
    assert resolved.role == "vllm_gpu"
    golden.check("vllm-gpu", [c for c in children if c["kind"] == "Deployment"])


def test_predictive_byo_without_auth_matches_golden(fixed_tls):
    obj = owned(mdep("iris", "team-a", workloadType="predictive", port=8000, authentication={"enabled": False},
                     model={"custom": {"registry": "myacr.azurecr.io", "repository": "models/iris", "tag": "v3",
                                       "credentials": {"secretRef": {"name": "acr-creds"}}}}))
    children, resolved = build(obj)
    assert resolved.role == "predictive-cpu-byo"
    golden.check("predictive-byo-no-auth", [c for c in children if c["kind"] == "Deployment"])


def test_every_child_carries_the_standard_labels_and_a_controller_owner_reference(fixed_tls):
    obj = owned(mdep("phi", "ns", endpoint={"enabled": True}))
    children, _ = build(obj)
    assert {c["kind"] for c in children} == {"ConfigMap", "Secret", "Deployment", "Service", "Ingress"}
    for child in children:
        meta = child["metadata"]
        assert meta["labels"][names.MANAGED_BY] == "inference-operator"
        assert meta["labels"][names.DEPLOYMENT_LABEL] == "phi"
        assert meta["ownerReferences"] == [{"apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment",
                                            "name": "phi", "uid": UID, "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta["annotations"][names.DESIRED_HASH]


def test_inference_service_and_model_deployment_build_identical_children(fixed_tls):
    md = owned(mdep("same", "ns", replicas=3, endpoint={"enabled": True, "host": "h.example.com"},
                    env=[{"name": "A", "value": "1"}]))
    legacy = owned(isvc("same", "ns", replicas=3, ingress={"enabled": True, "host": "h.example.com"},
                        env=[{"name": "A", "value": "1"}]), kind="InferenceService")
    a, _ = build(md)
    b, _ = build(legacy)

    def without_owner(objs):
        out = []
        for o in objs:
            o = json.loads(json.dumps(o))
            o["metadata"].pop("ownerReferences")
            o["metadata"]["annotations"].pop(names.DESIRED_HASH)
            out.append(o)
        return out

    assert without_owner(a) == without_owner(b)
    assert [c["metadata"]["ownerReferences"][0]["kind"] for c in b] == ["InferenceService"] * len(b)


def test_gpu_limit_becomes_nvidia_gpu_unless_skipped():
    spec = spec_mod.validate(spec_mod.from_model_deployment(mdep("g", "ns", compute="gpu",
                                                                    resources={"limits": {"gpu": 2}})))
    assert dep_builder.resources(spec)["limits"]["nvidia.com/gpu"] == "2"
    assert "gpu" not in dep_builder.resources(spec)["limits"]
    skipped = spec_mod.validate(spec_mod.from_model_deployment(
        mdep("g", "ns", compute="gpu", skipGpuResource=True, nodeSelector={"gpu": "yes"})))
    assert "nvidia.com/gpu" not in dep_builder.resources(skipped)["limits"]


def test_resource_defaults_and_overrides():
    spec = spec_mod.from_model_deployment(mdep("d", "ns", resources={"limits": {"memory": "2Gi"}}))
    assert dep_builder.resources(spec) == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                           "limits": {"cpu": "1000m", "memory": "2Gi"}}


@pytest.mark.parametrize("spec, field", [
    ({"compute": "cpu", "runtime": "vllm"}, "spec.runtime"),
    ({"compute": "gpu"}, "spec.resources.limits.gpu"),
    ({"compute": "gpu", "skipGpuResource": True}, "spec.skipGpuResource"),
    ({"compute": "gpu", "runtime": "vllm", "workloadType": "predictive", "resources": {"limits": {"gpu": 1}}},
     "spec.runtime"),
    ({"model": {"ref": "a", "catalog": {"name": "b"}}}, "spec.model"),
    ({"endpoint": {"enabled": True, "path": "no-slash"}}, "spec.endpoint.path"),
])
def test_invalid_specs_name_the_field(spec, field):
    with pytest.raises(spec_mod.InvalidSpec) as exc:
        spec_mod.validate(spec_mod.from_model_deployment(mdep("bad", "ns", **spec)))
    assert exc.value.field == field


def test_attack_refused_vllm_options_and_reserved_env_are_dropped_and_reported():
    # an object written straight to the cluster skips the control plane's 400: the operator drops the same things
    spec = spec_mod.from_model_deployment(mdep("v", "ns", compute="gpu", runtime="vllm",
                                                vllm={"preferences": {"hf-token": "x", "trust_remote_code": True,
                                                                      "host": "0.0.0.0", "model": "https://evil/m",
                                                                      "mod": "x", "dtype": "half"}},
                                                env=[{"name": "FOUNDRY_AUTH_MODE", "value": "none"},
                                                     {"name": "FOUNDRY_ENTRA_AUTHORITY", "value": "https://evil"},
                                                     {"name": "LD_PRELOAD", "value": "/x.so"},
                                                     {"name": "OK", "value": "1"}]))
    assert spec.vllm_preferences == {"dtype": "half"}
    assert spec.env == (("OK", "1"),)
    assert set(spec.dropped) == {"spec.vllm.preferences.hf-token", "spec.vllm.preferences.trust_remote_code",
                                 "spec.vllm.preferences.host", "spec.vllm.preferences.model",
                                 "spec.vllm.preferences.mod", "spec.env[FOUNDRY_AUTH_MODE]",
                                 "spec.env[FOUNDRY_ENTRA_AUTHORITY]", "spec.env[LD_PRELOAD]"}


def test_attack_vllm_option_values_cannot_smuggle_options_and_the_platform_has_the_last_word(fixed_tls):
    assert dep_builder.vllm_args({"dtype": "half", "enforce_eager": True, "off": False, "stop": ["a", "--host=x"],
                                  "cfg": {"x": 1}}) == ["--cfg={\"x\":1}", "--dtype=half", "--enforce-eager",
                                                        "--stop=a", "--stop=--host=x"]
    obj = owned(mdep("v", "ns", model={"catalog": {"name": "Phi-4-mini-instruct"}}, compute="gpu", runtime="vllm",
                     resources={"limits": {"gpu": 1}}, vllm={"preferences": {"max_model_len": "1 --host 0.0.0.0"}}))
    children, _ = build(obj)
    args = [c for c in children if c["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "--max-model-len=1 --host 0.0.0.0"
    assert args[-4:] == ["--host", "127.0.0.1", "--port", "5001"] and args.count("--host") == 1


def test_attack_vllm_pods_check_every_request_before_vllm_sees_it(fixed_tls):
    obj = owned(mdep("v", "ns", model={"catalog": {"name": "Phi-4-mini-instruct"}}, compute="gpu", runtime="vllm",
                     resources={"limits": {"gpu": 1}}))
    children, _ = build(obj)
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    nginx_conf = next(c for c in children if c["kind"] == "ConfigMap")["data"]["nginx.conf"]
    vllm, _tls, proxy = pod["containers"]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert proxy["command"] == ["foundry-inference", "auth-proxy"] and "127.0.0.1:5000" in nginx_conf
    assert env["PORT"] == "5000" and env["FOUNDRY_UPSTREAM_PORT"] == "5001" and env["FOUNDRY_AUTH_MODE"] == "api-key"
    assert vllm["args"][vllm["args"].index("--port") + 1] == "5001"      # vLLM is reachable only through the proxy
    assert [m["name"] for m in proxy["volumeMounts"]] == ["api-keys"]
    assert "api-keys" not in [m["name"] for m in vllm["volumeMounts"]]


def test_model_server_env_and_commands_per_workload(fixed_tls):
    children, _ = build(owned(mdep("chat", "ns")))
    app = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert app["command"] == ["foundry-inference", "chat-server"]
    assert env["FOUNDRY_AUTH_MODE"] == "api-key" and env["FOUNDRY_API_KEYS_DIR"] == "/var/run/foundry/keys"
    assert env["PORT"] == "5000" and env["FOUNDRY_MODEL_PATH"] == "/models/model"
    assert env["FOUNDRY_CHAT_HOST"] == "127.0.0.1"
    # a predictive catalog entry (docs/api.md, decision 7) picks the predictive server even with the default
    # workloadType
    children, resolved = build(owned(mdep("iris", "ns", model={"catalog": {"name": "iris-classifier"}})))
    assert resolved.workload_type == "predictive" and resolved.role == "predictive-cpu-byo"
    app = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert app["command"] == ["foundry-inference", "predictive-server"]
    assert {e["name"] for e in app["env"]} >= {"FOUNDRY_PREDICTIVE_HOST", "FOUNDRY_MODEL_ID"}


def test_entra_settings_reach_the_model_server(fixed_tls):
    settings = settings_mod.from_mapping({"authentication": {
        "entraEnabled": True, "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "clientId": "0b3a7e4c-7a4d-4c43-9f3b-3d0f9f8a1c11"}})
    children, _ = build(owned(mdep("chat", "ns")), settings)
    app = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["FOUNDRY_AUTH_MODE"] == "both"
    assert env["FOUNDRY_ENTRA_TENANT_ID"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"


def test_registry_credentials_are_referenced_never_copied():
    env = dep_builder.artifact_env({"type": "oci", "registry": "r.io", "repository": "m", "tag": "1",
                                    "credentials": {"name": "creds", "usernameKey": "u", "passwordKey": "p"}})
    assert json.loads(env[0]["value"]) == {"type": "oci", "registry": "r.io", "repository": "m", "tag": "1"}
    assert env[2] == {"name": "FOUNDRY_REGISTRY_USERNAME", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "u"}}}


def test_ingress_path_rewrite_class_and_annotations():
    owner = spec_mod.Owner("ModelDeployment", "v", "ns", "phi", UID, 1)
    settings = settings_mod.from_mapping({"ingress": {"className": "traefik"}})
    ing = ingress.ingress(owner, spec_mod._endpoint({"enabled": True, "annotations": {
        "nginx.ingress.kubernetes.io/proxy-body-size": "10m"}}), settings)
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/phi(/|$)(.*)" and path["pathType"] == "ImplementationSpecific"
    assert ing["spec"]["ingressClassName"] == "traefik" and "tls" not in ing["spec"]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "10m"
    custom = ingress.ingress(owner, spec_mod._endpoint({"enabled": True, "path": "/models/phi/", "host": "h",
                                                         "tls": {"enabled": True, "secretName": "wild"}}), settings)
    assert custom["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/models/phi(/|$)(.*)"
    assert custom["spec"]["tls"] == [{"secretName": "wild", "hosts": ["h"]}]
    assert ingress.external_endpoint(owner, spec_mod._endpoint({"enabled": True, "host": "h", "path": "/x"})) == \
        "http://h/x"


def test_service_name_is_a_dns_1035_label_even_for_a_digit_first_deployment():
    assert names.service("phi") == "phi"
    other = names.service("4phi")
    assert other[0].isalpha() and len(other) <= 63 and other != names.service("5phi")
    owner = spec_mod.Owner("ModelDeployment", "v", "ns", "4phi", UID, 1)
    assert service.service(owner)["metadata"]["name"] == other


def test_keys_secret_format_and_rotation_status():
    owner = spec_mod.Owner("ModelDeployment", "v", "ns", "phi", UID, 1)
    secret = keys.secret(owner, NOW)
    import base64
    primary = base64.b64decode(secret["data"]["primary-key"]).decode()
    secondary = base64.b64decode(secret["data"]["secondary-key"]).decode()
    assert primary.startswith("fndry-pk-") and len(primary) == 9 + 36
    assert secondary.startswith("fndry-sk-") and primary[9:] != secondary[9:]
    assert secret["metadata"]["annotations"][names.PRIMARY_CREATED] == "2026-01-15T10:00:00Z"
    assert keys.status(secret) == {"keysSecretName": "phi-api-keys", "primaryKeyCreatedAt": "2026-01-15T10:00:00Z",
                                   "secondaryKeyCreatedAt": "2026-01-15T10:00:00Z", "primaryKeyRotatedAt": None,
                                   "secondaryKeyRotatedAt": None}
    secret["metadata"]["annotations"][names.SECONDARY_CREATED] = "2026-02-01T00:00:00Z"   # the rotate endpoint
    assert keys.status(secret)["secondaryKeyRotatedAt"] == "2026-02-01T00:00:00Z"
    assert keys.repair_patch(owner, secret, NOW) is None        # a rotation is never undone


def test_keys_repair_fills_only_what_is_missing():
    owner = spec_mod.Owner("ModelDeployment", "v", "ns", "phi", UID, 1)
    secret = keys.secret(owner, NOW)
    secret["data"].pop("secondary-key")
    secret["metadata"]["labels"] = {}
    patch = keys.repair_patch(owner, secret, NOW)
    assert set(patch["data"]) == {"secondary-key"}
    assert patch["metadata"]["labels"] == names.child_labels("phi")


def test_lazy_registration_model_is_a_valid_catalog_model():
    entry, variant = CATALOG.resolve("phi-4-mini", "latest", "cpu")
    model = model_builder.catalog_model("ns", entry, variant)
    assert model["metadata"]["name"] == "phi-4-mini-instruct-generic-cpu-5"
    assert model["spec"]["source"] == {"type": "foundry-local", "catalog": {
        "name": "phi-4-mini", "id": "Phi-4-mini-instruct-generic-cpu:5", "version": "5"}}
    golden.check("lazy-model", [model])


def test_nginx_config_is_tls_only_with_limits_and_no_auth():
    text = nginx.pod_config(5000)
    assert "listen 8443 ssl backlog=4096;" in text and "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert "server 127.0.0.1:5000" in text and "client_max_body_size 50m;" in text
    assert "proxy_read_timeout 600s;" in text
    assert "auth" not in text.lower().replace("# rendered by the foundry-inference operator; edits are overwritten. "
                                              "tls termination only, no auth.", "")
    for weak in ("TLSv1 ", "TLSv1.1", "RC4", "MD5", "3DES"):
        assert weak not in text
    local = nginx.render(nginx.NginxParams(listen="127.0.0.1:9443", app_ports=(7001, 7002)))
    assert "server 127.0.0.1:7001" in local and "server 127.0.0.1:7002" in local


def test_nginx_is_sized_for_overload_and_refuses_the_excess_with_429_in_the_servers_envelope():
    text = nginx.pod_config(8000)
    in_flight = nginx.IN_FLIGHT
    # two connections per proxied request, plus the clients that wait: the table and the file limit hold them all
    connections = int(text.split("worker_connections ")[1].split(";")[0])
    nofile = int(text.split("worker_rlimit_nofile ")[1].split(";")[0])
    assert connections >= 10 * 64 * 2 + 2 * in_flight and nofile >= 2 * connections
    assert f"keepalive {in_flight};" in text                  # every upstream connection the limit allows is reused
    assert f"limit_conn foundry_inflight {in_flight};" in text and "limit_conn_status 429;" in text
    busy = text.split("location @busy {")[1].split("}")[0]
    assert "add_header Retry-After 1 always;" in busy and "return 429 $foundry_busy;" in busy
    predictive = json.loads(text.split("default '")[1].split("';")[0])
    assert predictive == {"error": predictive["error"], "queue_depth": in_flight, "retry_after": 1}
    assert predictive["error"].startswith("Queue full: ")
    openai = json.loads(text.split("~^/v1/(chat|completions|embeddings|audio|models|responses) '")[1].split("';")[0])
    assert openai["error"]["type"] == "rate_limit_error" and openai["error"]["message"]
    probes = text.split("location ~ ^/(health|healthz|ready|readyz)$ {")[1].split("}")[0]
    assert "limit_conn" not in probes                         # a busy pod still answers its probes


def test_the_models_volume_size_limit_reaches_the_fetcher_in_bytes(fixed_tls):
    obj = owned(mdep("iris", "team-a", workloadType="predictive", model={"custom": {
        "registry": "r.io", "repository": "m", "tag": "1"}}))
    children, _resolved = build(obj, settings_mod.from_mapping({"storeModel": {"modelsVolumeSizeLimit": "20Gi"}}))
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    assert {"name": "FOUNDRY_FETCH_LIMIT_BYTES", "value": str(20 << 30)} in pod["initContainers"][0]["env"]
    children, _resolved = build(obj)
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert not any(e["name"] == "FOUNDRY_FETCH_LIMIT_BYTES" for e in pod["initContainers"][0]["env"])


def test_probes_name_only_ports_of_their_own_container(fixed_tls):
    """A probe's named port resolves among its own container's ports only: the model server's probes go through the
    TLS sidecar's port, so they must give its number (a real kubelet refused `port: https` there and the model pod
    never became Ready: tests/e2e/test_cluster.py)."""
    for workload in (mdep("chat", "team-a"), mdep("iris", "team-a", model={"catalog": {"name": "iris-classifier"}})):
        children, _resolved = build(owned(workload))
        pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
        for container in pod["containers"]:
            own = {p.get("name") for p in container.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                port = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
                assert isinstance(port, int) or port in own, (container["name"], kind, port)


def _scale_to_zero(existing, settings=None, **spec):
    settings = settings or settings_mod.from_mapping({})
    obj = owned(mdep("iris", "team-a", workloadType="predictive", port=8000,
                     autoscaling={"minReplicas": 0, "maxReplicas": 3, "scaleToZeroAfterSeconds": 60}, **spec))
    owner = spec_mod.Owner.of(obj)
    parsed = spec_mod.validate(spec_mod.normalise(obj))
    resolved = resolve(parsed, settings, CATALOG, {})
    ctx = PassContext(catalog=CATALOG, ca_cert=b"-----BEGIN CERTIFICATE-----\nCA\n", ca_key=b"k", now=NOW)
    return DeploymentReconciler(None, settings).desired(owner, parsed, resolved, existing, ctx)


def test_scale_to_zero_deployment_gets_its_activator_and_replicas_service_matching_golden(fixed_tls):
    replicas = {"spec": {"clusterIP": "10.0.0.42"}}
    children = _scale_to_zero({("Service", "iris-replicas"): replicas})
    kinds = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert kinds[-2:] == [("Service", "iris-replicas"), ("Deployment", "iris-activator")]
    service_, activator = children[-2:]
    golden.check("scale-to-zero-activator", [service_, activator])
    model = next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == "iris")
    pod = activator["spec"]["template"]
    # never selected by the model Deployment (nor counted as its pod): no deployment label on the activator pods
    assert names.DEPLOYMENT_LABEL not in pod["metadata"]["labels"]
    assert not set(model["spec"]["selector"]["matchLabels"].items()) <= set(pod["metadata"]["labels"].items())
    assert service_["spec"]["selector"] == model["spec"]["selector"]["matchLabels"]
    # a replica of an autoscaled deployment is probed every second: it serves as soon as it is ready (cold start)
    server = model["spec"]["template"]["spec"]["containers"][0]
    assert (server["startupProbe"]["periodSeconds"], server["startupProbe"]["failureThreshold"]) == (1, 600)
    assert (server["readinessProbe"]["periodSeconds"], server["readinessProbe"]["failureThreshold"]) == (1, 15)
    sidecar = model["spec"]["template"]["spec"]["containers"][1]          # the pod is Ready only with it
    assert sidecar["name"] == "tls-proxy" and sidecar["readinessProbe"]["periodSeconds"] == 1
    # a removed replica (or activator) keeps serving while the routes to it catch up (every container)
    for container in (server, sidecar, *pod["spec"]["containers"]):
        assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "3"]}}}
    # the same certificate, nginx config and keys as the model pods; its own least-privilege identity
    model_vols = {v["name"]: v for v in model["spec"]["template"]["spec"]["volumes"]}
    for vol in pod["spec"]["volumes"]:
        assert vol == model_vols[vol["name"]]
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"api-keys", "nginx-config", "tls", "nginx-tmp"}
    assert pod["metadata"]["annotations"][names.CONFIG_HASH] == \
        model["spec"]["template"]["metadata"]["annotations"][names.CONFIG_HASH]
    assert pod["spec"]["serviceAccountName"] == names.ACTIVATOR_SERVICE_ACCOUNT
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["FOUNDRY_REPLICAS_ADDRESS"] == "10.0.0.42" and env["FOUNDRY_SERVICE_HOST"] == "iris.team-a.svc"
    assert env["PORT"] == "8000" and env["FOUNDRY_API_KEYS_DIR"] == names.KEYS_DIR


def test_no_activator_without_the_replicas_address_with_replicas_kept_or_in_embedded_mode(fixed_tls):
    kinds = [(c["kind"], c["metadata"]["name"]) for c in _scale_to_zero({})]
    assert ("Service", "iris-replicas") in kinds and ("Deployment", "iris-activator") not in kinds
    replicas = {("Service", "iris-replicas"): {"spec": {"clusterIP": "10.0.0.42"}}}
    embedded = settings_mod.from_mapping({}).for_embedded()
    assert not [c for c in _scale_to_zero(replicas, embedded) if "activator" in c["metadata"]["name"]
                or "replicas" in c["metadata"]["name"]]
    obj = owned(mdep("iris", "team-a", workloadType="predictive", port=8000,
                     autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    children, _ = build(obj)
    assert [c["metadata"]["name"] for c in children if c["kind"] in ("Deployment", "Service")] == ["iris", "iris"]
    fixed, _ = build(owned(mdep("iris", "team-a", workloadType="predictive", port=8000)))
    server = next(c for c in fixed if c["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert server["startupProbe"]["periodSeconds"] == 10 and server["readinessProbe"]["periodSeconds"] == 5
    sidecar = next(c for c in fixed if c["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][1]
    assert sidecar["readinessProbe"]["periodSeconds"] == 5
    # a fixed deployment's pod replaced by a rolling update drains as well
    assert server["lifecycle"] == sidecar["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "3"]}}}
