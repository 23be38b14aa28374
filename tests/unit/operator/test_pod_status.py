"""Reading a cluster's pods (pod_status) and the fetcher's log lines (fetch_log): download progress from the tail of
a running fetcher's log, shown on the deployment's status exactly as the embedded node agent's; which pods a key
rotation must nudge. The pods' own reporting on a real apiserver: tests/integration/test_operator_pods.py."""
import pytest

from foundry_inference.operator import fetch_log, names, pod_status, status

from .factories import NOW
from .test_operator_status import SETTINGS, deployment, outcome, owner_obj

pytestmark = pytest.mark.unit

LOG = ("model-fetcher: listing the container\n"
       "model-fetcher: progress: 6291456 of 50331648 bytes (12%)\n"
       "model-fetcher: progress: 12582912 of 50331648 bytes (25%)\n")


def pod(name, init_state, created="2026-12-01T10:00:00Z", annotations=None):
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                         "annotations": annotations or {}},
            "status": {"initContainerStatuses": [{"name": "model-fetcher", "state": init_state, "restartCount": 0}]}}


def test_a_running_fetchers_log_tail_is_the_download_condition():
    asked = []

    def read_log(p, container):
        asked.append((p["metadata"]["name"], container))
        return LOG
    conds = pod_status.conditions([pod("a", {"running": {}})], read_log)
    assert asked == [("a", "model-fetcher")]
    assert conds == [{"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading",
                      "message": "12.0 MiB (12582912 bytes) of 48.0 MiB (50331648 bytes) (25%)"}]


def test_no_log_is_read_for_a_fetcher_that_is_not_running_and_an_unreadable_log_shows_nothing():
    def read_log(_pod, _container):
        raise AssertionError("asked")
    assert pod_status.conditions([pod("a", {"terminated": {"exitCode": 0}})], read_log) == []
    assert pod_status.conditions([pod("a", {"running": {}})], lambda *_: None) == []


def test_a_restarted_fetcher_that_downloads_again_is_progress_not_an_error():
    """Killed mid-download (its log tail, the termination message, is a progress line): the kubelet restarts it in
    the same pod and it resumes from the model volume. While it moves on, the status shows the download (naming the
    previous attempt's exit), not Error; a retry that shows no progress (failing again) stays an Error."""
    killed = {"name": "model-fetcher", "restartCount": 1, "state": {"running": {}},
              "lastState": {"terminated": {"exitCode": 137, "reason": "Error",
                                           "message": "model-fetcher: progress: 6291456 of 50331648 bytes (12%)\n"}}}
    p = pod("a", {})
    p["status"]["initContainerStatuses"] = [killed]
    conds = pod_status.conditions([p], lambda *_: LOG)
    assert conds == [{"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading",
                      "message": "12.0 MiB (12582912 bytes) of 48.0 MiB (50331648 bytes) (25%); resumed after: "
                                 "model fetch failed (attempt 1): exited with 137 (Error)"}]
    st = status.compute(owner_obj(), _with_pods(conds), SETTINGS, NOW)
    assert st["state"] == "Creating" and "downloading the model: 12.0 MiB" in st["message"], st
    stuck = pod_status.conditions([p], lambda *_: "model-fetcher: listing the container\n")
    assert [(c["type"], c["status"], c["reason"]) for c in stuck] == [("Progressing", "False", "FetchFailed")]
    assert stuck[0]["message"] == "model fetch failed (attempt 1): exited with 137 (Error)"


def _with_pods(conds):
    out = outcome(owner_obj(), deployment(0))
    out.pod_conditions = conds
    return out


def test_the_progress_reads_on_status_as_in_embedded_mode():
    """The same message whether the agent put the condition on the Deployment or the pods gave it."""
    cluster = outcome(owner_obj(), deployment(0))
    cluster.pod_conditions = pod_status.conditions([pod("a", {"running": {}})], lambda *_: LOG)
    embedded = outcome(owner_obj(), deployment(0, conditions=[
        {"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading",
         "message": fetch_log.download_progress(LOG)}]))
    a, b = (status.compute(owner_obj(), o, SETTINGS, NOW) for o in (cluster, embedded))
    assert a["message"] == b["message"] == ("creating: 0/1 replicas ready; downloading the model: 12.0 MiB "
                                            "(12582912 bytes) of 48.0 MiB (50331648 bytes) (25%)")
    assert [c for c in a["conditions"] if c["type"] == "ModelDownloading"] == \
           [c for c in b["conditions"] if c["type"] == "ModelDownloading"]


def test_failure_cause_takes_the_last_failed_line():
    assert fetch_log.failure_cause("x\nmodel-fetcher: failed: first\nmodel-fetcher: failed: last\n") == "last"
    assert fetch_log.failure_cause("progress: 1 of 2 bytes (50%)\n") is None
    assert fetch_log.download_progress("nothing") is None


def _secret(generated, primary, secondary=None, data="a"):
    annotations = {names.KEYS_GENERATED: generated, names.PRIMARY_CREATED: primary,
                   names.SECONDARY_CREATED: secondary or generated}
    return {"metadata": {"creationTimestamp": generated, "annotations": annotations},
            "data": {"primary-key": data, "secondary-key": "b"}}


def test_stale_pods_are_those_created_before_the_last_key_change():
    old = pod("old", {}, created="2026-12-01T10:00:00Z")
    same_second = pod("same", {}, created="2026-12-01T10:05:00Z")
    new = pod("new", {}, created="2026-12-01T10:05:01Z")
    # never rotated: the pods mounted the keys from the start, nothing to do
    assert pod_status.stale_for_keys([old, new], _secret("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z")) == []
    rotated = _secret("2026-12-01T09:00:00Z", "2026-12-01T10:05:00Z")
    assert pod_status.stale_for_keys([old, same_second, new], rotated) == ["old", "same"]
    # already annotated with this very version: not again; with an older version: again
    done = pod("old", {}, annotations={names.KEYS_DIGEST: pod_status.keys_digest(rotated)})
    assert pod_status.stale_for_keys([done], rotated) == []
    assert pod_status.stale_for_keys([done], _secret("2026-12-01T09:00:00Z", "2026-12-01T10:05:00Z", data="c")) \
        == ["old"]
    # a keys Secret deleted and recreated (new keys, never rotated since): the pods from before it
    recreated = _secret("2026-12-01T10:03:00Z", "2026-12-01T10:03:00Z")
    assert pod_status.stale_for_keys([old, new], recreated) == ["old"]
    # a terminating pod is left alone
    leaving = pod("leaving", {})
    leaving["metadata"]["deletionTimestamp"] = "2026-12-01T10:06:00Z"
    assert pod_status.stale_for_keys([leaving], rotated) == []
