"""What a cluster's pods say that their Deployment's status does not, as the same Deployment-style conditions the
embedded node agent writes (one way to report it in both modes; status.compute reads either):

- `Progressing=False` with the cause, when no replica can start: the model fetcher failed (its termination message:
  the fetcher's `failed: <cause>` line), an image cannot be pulled (the kubelet's ErrImagePull / ImagePullBackOff /
  ErrImageNeverPull / InvalidImageName, with the image), or the model server keeps exiting (CrashLoopBackOff after
  names.CRASH_LOOP_RESTARTS restarts, with its last exit). Seen on the pod at once, not after the Deployment's
  progress deadline.
- `ModelDownloading`: a running fetcher's last `progress:` line, read from the tail of its log. A fetcher the kubelet
  restarted after a failure (killed, OOM, a network error) that is downloading again (resuming) is not an Error:
  the condition names the previous attempt's cause instead.
- `ModelServerRestarts`: each pod's model-server restartCount and its last termination.

And the key-rotation nudge: `stale_for_keys` names the pods that started before the API keys last changed, so the
operator can annotate them (names.KEYS_DIGEST); the update makes the kubelet sync the pod and refresh its Secret
volume at once instead of within its periodic sync.
"""
import datetime
import hashlib
import logging

from foundry_inference.store import errors

from . import fetch_log, names
from .builders.deployment import APP_CONTAINER, FETCH_CONTAINER

log = logging.getLogger("foundry_inference.operator")
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
MESSAGE_LIMIT = 600


def _live(pods):
    return sorted((p for p in pods if not p["metadata"].get("deletionTimestamp")),
                  key=lambda p: p["metadata"]["name"])


def _statuses(pod, field):
    return (pod.get("status") or {}).get(field) or []


def exit_text(terminated):
    """'exited with 137 (OOMKilled)' from a containerStateTerminated."""
    code, reason = terminated.get("exitCode"), terminated.get("reason")
    text = f"exited with {code}" if code is not None else "exited"
    return f"{text} ({reason})" if reason else text


def _fetch_problem(cs):
    """The fetcher's failure (None while it has not failed, or once it succeeded)."""
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    current = state.get("terminated")
    if current is not None and current.get("exitCode") == 0:
        return None
    failed = current if current is not None and current.get("exitCode") else last.get("terminated")
    if not failed or not failed.get("exitCode"):
        return None
    attempts = int(cs.get("restartCount") or 0) + (1 if failed is current else 0)
    message = (failed.get("message") or "").strip()
    last = message.splitlines()[-1] if message else None
    if last and fetch_log.download_progress(last):
        last = None                 # killed mid-download (the log tail is its progress): the exit says more
    why = fetch_log.failure_cause(message) or last or exit_text(failed)
    return "FetchFailed", f"model fetch failed (attempt {max(1, attempts)}): {why}"


def _pull_problem(cs):
    waiting = (cs.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") not in IMAGE_PULL_REASONS:
        return None
    detail = (waiting.get("message") or "").strip()
    return "ImagePullFailed", (f"cannot start {cs.get('name')}: {waiting['reason']} for image {cs.get('image')}"
                               + (f": {detail}" if detail else ""))


def _crash_problem(cs):
    waiting = (cs.get("state") or {}).get("waiting") or {}
    restarts = int(cs.get("restartCount") or 0)
    if waiting.get("reason") != "CrashLoopBackOff" or restarts < names.CRASH_LOOP_RESTARTS:
        return None
    last = (cs.get("lastState") or {}).get("terminated") or {}
    lines = [line for line in (last.get("message") or "").splitlines() if line.strip()]
    return "CrashLoopBackOff", (f"{cs.get('name')} keeps exiting ({exit_text(last)}, {restarts} restarts)"
                                + (f": {lines[-1][:300]}" if lines else ""))


def log_reader(store):
    """`read_log(pod, container)`: the tail of a running fetcher's log, None when the kubelet cannot be asked
    (progress is best effort)."""
    def read_log(pod, container):
        try:
            return store.pod_log(pod["metadata"]["namespace"], pod["metadata"]["name"], container)
        except errors.StoreError as exc:
            log.debug("no log of %s/%s: %s", pod["metadata"]["name"], container, exc.message)
            return None
    return read_log


def conditions(pods, read_log):
    """Deployment-style conditions from the pods of one deployment. `read_log(pod, container)` returns the tail of a
    container's log (or None); it is asked only for a fetcher that is running."""
    problem, progress, restarts = None, None, []
    for pod in _live(pods):
        name = pod["metadata"]["name"]
        for cs in _statuses(pod, "initContainerStatuses"):
            problem = problem or _pull_problem(cs)
            if cs.get("name") != FETCH_CONTAINER:
                continue
            fetch_problem = _fetch_problem(cs)
            if progress is None and "running" in (cs.get("state") or {}):
                progress = fetch_log.download_progress(read_log(pod, FETCH_CONTAINER))
                if progress and fetch_problem:      # restarted and moving on (resumed): no Error, the cause noted
                    progress, fetch_problem = f"{progress}; resumed after: {fetch_problem[1]}", None
            problem = problem or fetch_problem
        for cs in _statuses(pod, "containerStatuses"):
            problem = problem or _pull_problem(cs)
            if cs.get("name") != APP_CONTAINER:
                continue
            problem = problem or _crash_problem(cs)
            count = int(cs.get("restartCount") or 0)
            if count:
                last = (cs.get("lastState") or {}).get("terminated")
                restarts.append(f"{name}/{APP_CONTAINER} restarted {count} time(s)"
                                + (f", last {exit_text(last)}" if last else ""))
    out = []
    if problem:
        out.append({"type": "Progressing", "status": "False", "reason": problem[0],
                    "message": problem[1][:MESSAGE_LIMIT]})
    if progress:
        out.append({"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading", "message": progress})
    if restarts:
        out.append({"type": names.RESTARTS_CONDITION, "status": "True", "reason": "ProcessExited",
                    "message": "; ".join(restarts)[:MESSAGE_LIMIT]})
    return out


# --- the key-rotation nudge ----------------------------------------------------------------------------------------
def keys_digest(secret):
    data = (secret or {}).get("data") or {}
    return hashlib.sha256("\n".join(f"{k}={data[k]}" for k in sorted(data)).encode()).hexdigest()[:20]


def _when(text):
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def stale_for_keys(pods, secret):
    """Names of the pods that may still hold older keys than `secret`: created before the keys last changed and not
    yet annotated with the current digest. Never the pods of a Secret that was not rotated since it was generated
    (they mounted it from the start), so a freshly created deployment costs no extra write."""
    meta = (secret or {}).get("metadata") or {}
    annotations = meta.get("annotations") or {}
    generated = _when(annotations.get(names.KEYS_GENERATED) or meta.get("creationTimestamp"))
    stamps = [t for t in (_when(annotations.get(key)) for key in (names.PRIMARY_CREATED, names.SECONDARY_CREATED))
              if t is not None]
    if generated is None:
        return []
    rotated = max(stamps, default=generated)
    digest = keys_digest(secret)
    stale = []
    for pod in _live(pods):
        pod_meta = pod["metadata"]
        created = _when(pod_meta.get("creationTimestamp"))
        if created is None or (pod_meta.get("annotations") or {}).get(names.KEYS_DIGEST) == digest:
            continue
        # stamps have whole seconds: a pod created in the second of a rotation may have mounted either version
        if (created <= rotated) if rotated > generated else (created < generated):
            stale.append(pod_meta["name"])
    return stale


def keys_patch(secret):
    return {"metadata": {"annotations": {names.KEYS_DIGEST: keys_digest(secret)}}}
