"""Every pod spec the operator and the chart produce is admitted by the restricted Pod Security profile (the rules in
tests/support/pod_security.py, checked here on the operator's children for each kind of model and on each of the
chart's CI value sets)."""
import pytest

from foundry_inference.operator import settings as settings_mod
from tests.support import helm
from tests.support.pod_security import restricted_violations
from tests.unit.operator.factories import mdep
from tests.unit.operator.test_operator_builders import build, fixed_tls, owned  # noqa: F401 - fixed_tls: fixture
from tests.unit.test_chart_render import VARIANTS

pytestmark = pytest.mark.unit

POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet")
ENTRA = settings_mod.from_mapping({"authentication": {"entraEnabled": True,
                                                      "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                                                      "clientId": "0b3a7e4c-7a4d-4c43-9f3b-3d0f9f8a1c11"}})
MODELS = {
    "catalog-chat": (mdep("chat", "ns"), None),
    "predictive-byo-private-registry": (mdep("iris", "ns", workloadType="predictive", port=8000, model={"custom": {
        "registry": "myacr.azurecr.io", "repository": "models/iris", "tag": "v3",
        "credentials": {"secretRef": {"name": "acr-creds"}}}}), None),
    "no-auth": (mdep("open", "ns", authentication={"enabled": False}), None),
    "vllm-gpu": (mdep("v", "ns", model={"catalog": {"name": "Phi-4-mini-instruct"}}, compute="gpu", runtime="vllm",
                      resources={"limits": {"gpu": 1}}), None),
    "entra": (mdep("chat", "ns"), ENTRA),
}


def test_the_checker_refuses_what_the_profile_refuses():
    root = {"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    problems = " | ".join(restricted_violations(root))
    assert "runAsNonRoot" in problems and "seccompProfile" in problems and "hostPath" in problems


@pytest.mark.usefixtures("fixed_tls")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_attack_model_pods_are_admitted_by_the_restricted_profile(name):
    obj, settings = MODELS[name]
    children, _ = build(owned(obj), settings)
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    sc = pod["securityContext"]
    assert sc["runAsUser"] == sc["runAsGroup"] == sc["fsGroup"] == 65532      # a fixed, non-root uid/gid


@pytest.mark.parametrize("values", VARIANTS)
def test_chart_pods_are_admitted_by_the_restricted_profile(values):
    out = helm.render(values)
    pods = [o for o in out.objects if o["kind"] in POD_KINDS] + [o for o in out.objects if o["kind"] == "Pod"]
    assert pods
    for obj in pods:
        spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        assert restricted_violations(spec) == [], obj["metadata"]["name"]
