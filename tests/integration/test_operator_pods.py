"""What the operator reads from a cluster's pods, on the real kube-apiserver + controller-manager: the deployment
controller creates the pods, and the test writes their status through the status subresource as a kubelet would
(there is no kubelet here; tests/e2e/test_cluster.py shows the same with a real one). Fetch failures, image-pull
failures and a crash-looping server become Error with their cause at once; restarts appear as in embedded mode; a
key rotation gets the older pods annotated (so a kubelet refreshes their keys), woken by the keys watch.
"""
import base64
import datetime
import threading
import time
import uuid

import pytest

from foundry_inference.operator import names, pod_status
from tests.integration.test_operator_reconcile import Env, wait_for
from tests.unit.operator.factories import converge, mdep

pytestmark = pytest.mark.integration


@pytest.fixture
def env(kube, kube_store):
    return Env("kube", kube_store, kube.create_namespace(f"pods-{uuid.uuid4().hex[:8]}"), kube)


def _pods(env, name):
    return wait_for(lambda: [p for p in env.store.list_all("Pod", env.ns,
                                                           label_selector=f"{names.DEPLOYMENT_LABEL}={name}")
                             if not p["metadata"].get("deletionTimestamp")], 30, f"pods of {name}")


def _set(env, pod, init=None, app=None, ready=False):
    """Write a pod's status as a kubelet would: the fetcher's and the model server's container statuses."""
    status = {"phase": "Running" if ready else "Pending",
              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "model-fetcher", "image": "fetcher:1", "imageID": "",
                                            "ready": False, "restartCount": 0, **init}]
    if app is not None:
        status["containerStatuses"] = [{"name": "model-server", "image": "server:1", "imageID": "", "ready": ready,
                                        "restartCount": 0, **app}]
    env.store.patch_status("Pod", env.ns, pod["metadata"]["name"], status)


def _status(env, name):
    return env.store.get("ModelDeployment", env.ns, name).get("status") or {}


FETCH_LOG_TAIL = ("model-fetcher: resolving registry.example.com/models/none:1\n"
                  "model-fetcher: failed: cannot resolve registry.example.com: Name or service not known\n")


def test_a_failing_fetcher_is_an_error_with_its_cause_at_once_and_recovers(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    pod = _pods(env, "phi")[0]
    assert _status(env, "phi")["state"] == "Creating"
    _set(env, pod, init={"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": FETCH_LOG_TAIL}},
                         "restartCount": 1})
    op.run_pass()
    st = _status(env, "phi")
    assert st["state"] == "Error", st
    assert st["message"] == ("model fetch failed (attempt 1): cannot resolve registry.example.com: Name or service "
                             "not known"), st
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["message"] == st["message"]
    # the retry (running again) still shows why; a success clears it
    _set(env, pod, init={"state": {"running": {}}, "restartCount": 1,
                         "lastState": {"terminated": {"exitCode": 1, "message": FETCH_LOG_TAIL}}})
    op.run_pass()
    assert _status(env, "phi")["state"] == "Error"
    _set(env, pod, init={"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}, "restartCount": 1},
         app={"state": {"running": {}}, "ready": True}, ready=True)
    env.make_ready("phi")
    converge(op)
    assert _status(env, "phi")["state"] == "Running", _status(env, "phi")


def test_a_fetcher_without_a_cause_line_reports_its_exit(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    _set(env, _pods(env, "phi")[0], init={"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}})
    op.run_pass()
    assert _status(env, "phi")["message"] == "model fetch failed (attempt 1): exited with 137 (OOMKilled)"


@pytest.mark.parametrize("reason,message", [
    ("ErrImageNeverPull", 'Container image "server:1" is not present with pull policy of Never'),
    ("ImagePullBackOff", 'Back-off pulling image "server:1"'),
])
def test_an_image_that_cannot_be_pulled_is_an_error_naming_the_image(env, reason, message):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    _set(env, _pods(env, "phi")[0], init={"state": {"terminated": {"exitCode": 0}}},
         app={"state": {"waiting": {"reason": reason, "message": message}}})
    op.run_pass()
    st = _status(env, "phi")
    assert st["state"] == "Error"
    assert st["message"] == f"cannot start model-server: {reason} for image server:1: {message}", st


def test_restarts_show_on_status_and_a_crash_loop_is_an_error(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    pod = _pods(env, "phi")[0]
    _set(env, pod, init={"state": {"terminated": {"exitCode": 0}}}, ready=True,
         app={"state": {"running": {}}, "ready": True, "restartCount": 2,
              "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}})
    env.make_ready("phi")
    converge(op)
    st = _status(env, "phi")
    assert st["state"] == "Running", st
    cond = next(c for c in st["conditions"] if c["type"] == "ModelServerRestarted")
    assert cond["status"] == "True" and cond["reason"] == "ProcessExited"
    assert cond["message"] == f"{pod['metadata']['name']}/model-server restarted 2 time(s), last exited with 137 " \
                              "(OOMKilled)"
    # two restarts in backoff is not yet a crash loop; the third is (names.CRASH_LOOP_RESTARTS, as in embedded mode)
    crash = {"exitCode": 1, "reason": "Error", "message": "loading model.onnx\nInvalidProtobuf: model.onnx\n"}
    _set(env, pod, init={"state": {"terminated": {"exitCode": 0}}}, app={
        "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 3, "lastState": {"terminated": crash}})
    # once the deployment controller has seen the pod unready (until then the Deployment still counts it ready)
    st = wait_for(lambda: op.run_pass() and (lambda s: s["state"] == "Error" and s)(_status(env, "phi")), 30,
                  "the crash loop on status")
    assert st["message"] == "model-server keeps exiting (exited with 1 (Error), 3 restarts): InvalidProtobuf: " \
                            "model.onnx", st


def test_attack_a_huge_hostile_termination_message_is_cut_not_stored_whole(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    hostile = "model-fetcher: failed: " + "\u202e<script>" * 2000
    _set(env, _pods(env, "phi")[0], init={"state": {"terminated": {"exitCode": 1, "message": hostile[:4096]}}})
    op.run_pass()
    st = _status(env, "phi")
    assert st["state"] == "Error" and len(st["message"]) <= pod_status.MESSAGE_LIMIT, len(st["message"])
    assert all(len(c["message"]) <= pod_status.MESSAGE_LIMIT for c in st["conditions"])


def _rotate(env, name, which="primary"):
    """What the control plane's rotate endpoint writes: a new value and its created-at stamp."""
    secret = env.store.get("Secret", env.ns, names.keys_secret(name))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    secret["data"][f"{which}-key"] = base64.b64encode(uuid.uuid4().hex.encode()).decode()
    secret["metadata"]["annotations"][f"foundry.azure.com/{which}-key-created-at"] = stamp
    return env.store.replace(secret)


def test_a_rotation_annotates_the_older_pods_once_and_new_pods_never(env):
    env.store.create(mdep("phi", env.ns, replicas=2))
    op = env.operator()
    converge(op)
    pods = _pods(env, "phi")
    assert len(pods) == 2
    assert all(names.KEYS_DIGEST not in (p["metadata"].get("annotations") or {}) for p in pods)  # no extra write
    time.sleep(1.1)             # the created-at stamps have whole seconds
    secret = _rotate(env, "phi")
    report = op.run_pass()
    assert report.child_writes == 2, report
    digest = pod_status.keys_digest(secret)
    for pod in _pods(env, "phi"):
        assert pod["metadata"]["annotations"][names.KEYS_DIGEST] == digest
    assert converge(op)[-1].child_writes == 0
    # a pod created after the rotation mounted the new keys: left alone (one created within the rotation's second
    # is nudged too, harmlessly: the stamps have whole seconds)
    time.sleep(1.1)
    env.store.patch("ModelDeployment", env.ns, "phi", {"spec": {"replicas": 3}})
    converge(op)
    wait_for(lambda: len(_pods(env, "phi")) == 3, 30, "a third pod")
    converge(op)
    fresh = [p for p in _pods(env, "phi") if names.KEYS_DIGEST not in (p["metadata"].get("annotations") or {})]
    assert len(fresh) == 1


def test_the_keys_watch_starts_a_pass_at_once_after_a_rotation(env):
    env.store.create(mdep("phi", env.ns))
    op = env.operator(pollIntervalSeconds=60)       # a rotation must not wait for the next poll
    converge(op)
    _pods(env, "phi")
    stop = threading.Event()
    thread = threading.Thread(target=op.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: op.passes >= 1 and op._watches, 30, "the first pass and the keys watch")
        time.sleep(1.5)         # the watch's initial events have been answered by a pass; stamps are whole seconds
        passes = op.passes
        secret = _rotate(env, "phi", "secondary")
        started = time.monotonic()
        digest = pod_status.keys_digest(secret)
        wait_for(lambda: all((p["metadata"].get("annotations") or {}).get(names.KEYS_DIGEST) == digest
                             for p in _pods(env, "phi")), 20, "the pod annotated after the rotation")
        assert time.monotonic() - started < 8, time.monotonic() - started       # not the 60 s poll
        assert op.passes > passes
    finally:
        stop.set()
        op.wake.set()
        thread.join(10)
        op.close()
    assert not thread.is_alive()


def test_a_running_fetcher_whose_log_cannot_be_read_leaves_the_deployment_creating(env):
    """Without a kubelet the apiserver cannot serve the fetcher's log: no progress shown, nothing fails, and the
    deployment keeps being looked at while the fetcher runs (progress moves without any resourceVersion moving)."""
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    _set(env, _pods(env, "phi")[0], init={"state": {"running": {}}})
    for _ in range(2):
        report = op.run_pass()
        assert report.failed == 0 and report.unchanged == 0, report
    st = _status(env, "phi")
    assert st["state"] == "Creating" and not [c for c in st["conditions"] if c["type"] == "ModelDownloading"], st


def test_attack_a_pod_that_only_wears_the_labels_cannot_put_a_cause_on_the_status(env):
    """Someone who may create pods in the namespace labels one like a deployment's pod: it is not one of the
    Deployment's ReplicaSet's pods, so its status is not reported and it is never annotated."""
    env.store.create(mdep("phi", env.ns))
    op = env.operator()
    converge(op)
    labels = {**names.child_labels("phi"), names.COMPONENT_LABEL: "model-server"}
    fake = env.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "phi-fake", "namespace": env.ns, "labels": labels},
        "spec": {"containers": [{"name": "model-server", "image": "server:1"}]}})
    _set(env, fake, app={"state": {"waiting": {"reason": "ImagePullBackOff", "message": "planted"}}})
    converge(op)
    st = _status(env, "phi")
    assert st["state"] == "Creating" and "planted" not in st["message"], st
