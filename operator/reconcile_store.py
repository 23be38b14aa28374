"""Reconcile one StoreModel (the model cache on a cluster; builders/store.py): create its volume claim and its fetch
Job once (a Job's pod template cannot change; a failed Job is retried by deleting it; a claim that was deleted is
made again, empty, and its old Job is deleted so that a new one fills it), and write its status from what they
show:

- Pending: the Job's pod has not started (the claim is not bound yet, an image is not pulled) - the message says
  which;
- Storing: the fetcher runs; `progress` (percent) and `sizeBytes` come from its log's last progress line (the size:
  the largest total seen, as a resumed fetcher counts only what is left); a fetcher that failed before and runs
  again says what the last attempt died of;
- Available: the Job completed; `path` names the claim and folder;
- Error: the Job failed storeModel.fetchBackoffLimit + 1 times; the message is the last fetcher's cause.

Deployments read that status (`conditions`): they show the download on their own status and create their model
Deployment only once the StoreModel is Available.
"""
from foundry_inference.store import errors

from . import apply, fetch_log, names, pod_status
from .builders import store as store_builder
from .builders.deployment import FETCH_CONTAINER
from .pod_status import IMAGE_PULL_REASONS, MESSAGE_LIMIT
from .status import changed, condition


def _job_condition(job, type_):
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _fetcher(pod):
    return next((cs for cs in (pod.get("status") or {}).get("containerStatuses") or []
                 if cs.get("name") == FETCH_CONTAINER), None)


def _failure(pod):
    """The cause a failed fetcher pod gives (its termination message's `failed:` line), else its exit."""
    terminated = ((_fetcher(pod) or {}).get("state") or {}).get("terminated") or {}
    message = (terminated.get("message") or "").strip()
    cause = fetch_log.failure_cause(message)
    if cause:
        return cause
    if terminated.get("exitCode") is not None:
        return pod_status.exit_text(terminated)
    return (pod.get("status") or {}).get("message") or (pod.get("status") or {}).get("reason") or "the pod failed"


def _by_age(pods):
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def observe(store_model, claim, job, pods, read_log):
    """(phase, message, progress, sizeBytes) from the children; `read_log(pod, container)` gives a running
    fetcher's log tail or None."""
    name = store_model["metadata"]["name"]
    previous = store_model.get("status") or {}
    size = previous.get("sizeBytes")
    pods = _by_age(pods)
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if _job_condition(job, "Complete"):
        return "Available", f"stored in PersistentVolumeClaim {name}", 100, size
    if _job_condition(job, "Failed"):
        cause = _failure(failed[-1]) if failed else (_job_condition(job, "Failed").get("message") or "failed")
        return "Error", f"model fetch failed ({len(failed) or 1} attempt(s)): {cause}", None, size
    running = next((p for p in reversed(pods) if (p.get("status") or {}).get("phase") == "Running"), None)
    retry = f"; retrying after: {_failure(failed[-1])}" if failed else ""
    if running is not None:
        tail = read_log(running, FETCH_CONTAINER)
        numbers = fetch_log.progress_numbers(tail)
        if numbers is None:
            return "Storing", f"fetching the model{retry}", previous.get("progress"), size
        # a resumed fetcher counts only what is left to fetch: the model's size is the largest total seen
        return "Storing", f"downloading {fetch_log.download_progress(tail)}{retry}", numbers[2], \
            max(numbers[1], size or 0)
    if claim is not None and ((claim.get("status") or {}).get("phase") or "Pending") == "Pending":
        storage_class = (claim.get("spec") or {}).get("storageClassName") or "the cluster's default class"
        return "Pending", (f"waiting for PersistentVolumeClaim {name} to be bound (storage class {storage_class})"
                           f"{retry}"), None, size
    for pod in reversed(pods):
        waiting = ((_fetcher(pod) or {}).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            return "Pending", f"cannot start the fetcher: {waiting['reason']}: {waiting.get('message') or ''}" \
                              f"{retry}", None, size
    return "Pending", f"waiting for the fetch job {names.store_job(name)}{retry}", None, size


def status(store_model, observed, now):
    phase, message, progress, size = observed
    previous = store_model.get("status") or {}
    generation = int(store_model["metadata"].get("generation") or 1)
    ready = condition(previous.get("conditions"), "Ready", "True" if phase == "Available" else "False", phase,
                      message, generation, now)
    ready.pop("observedGeneration", None)        # not in the StoreModel's condition schema
    name = store_model["metadata"]["name"]
    return {"phase": phase, "message": message[:MESSAGE_LIMIT],
            "path": store_builder.stored_path(name) if phase == "Available" else None,
            "digest": None, "sizeBytes": size, "progress": progress, "conditions": [ready]}


def conditions(store_model):
    """What a deployment using `store_model` shows while it is not Available, as the Deployment-style conditions
    status.compute reads from pods (pod_status.conditions): its progress, or its failure."""
    st = (store_model or {}).get("status") or {}
    name = (store_model or {}).get("metadata", {}).get("name")
    phase, message = st.get("phase") or "Pending", st.get("message") or "waiting for the model store"
    if phase == "Available":
        return []
    if phase == "Error":
        return [{"type": "Progressing", "status": "False", "reason": "FetchFailed",
                 "message": f"StoreModel {name}: {message}"[:MESSAGE_LIMIT]}]
    return [{"type": names.DOWNLOAD_CONDITION, "status": "True", "reason": "Downloading",
             "message": f"{message} (StoreModel {name})"[:MESSAGE_LIMIT]}]


def available(store_model):
    return ((store_model or {}).get("status") or {}).get("phase") == "Available"


class StoreReconciler:
    def __init__(self, store, settings):
        self.store = store
        self.settings = settings

    def _ensure(self, desired, found, actions):
        """Create a child once; never update it (a Job's template is immutable; a claim only grows)."""
        if found is not None:
            if (apply.controller_of(found) or {}).get("uid") != apply.controller_of(desired)["uid"]:
                raise apply.ForeignChild(apply.foreign_message(found))
            return found
        meta = desired["metadata"]
        try:
            created = self.store.create(desired)
        except errors.AlreadyExists:
            return self._ensure(desired, self.store.get(desired["kind"], meta["namespace"], meta["name"]), actions)
        actions.append(("created", desired["kind"], meta["name"]))
        return created

    def reconcile(self, store_model, snapshot, now):
        """Returns the list of (action, kind, name) written; the status patch included."""
        meta = store_model["metadata"]
        if meta.get("deletionTimestamp"):
            return []
        kids = snapshot.store_children_of(meta["namespace"], meta["name"])
        actions = []
        artifact = store_builder.artifact_of(store_model)
        try:
            if artifact is None:
                raise ValueError(f"annotation {names.STORE_ARTIFACT} does not name an artifact (StoreModels are "
                                 "made by the operator for the deployments that use them)")
            listed_claim = kids.get(("PersistentVolumeClaim", meta["name"]))
            claim = self._ensure(store_builder.volume_claim(store_model, self.settings), listed_claim, actions)
            job = kids.get(("Job", names.store_job(meta["name"])))
            stale = job is not None and listed_claim is None and claim is not None and \
                ("created", "PersistentVolumeClaim", meta["name"]) in actions
            if stale:       # the claim was deleted and is new, empty: what the old Job stored went with it
                self._delete(job, actions)
            if stale or (job is not None and job["metadata"].get("deletionTimestamp")):
                observed = ("Pending", f"waiting for the previous fetch job {job['metadata']['name']} to be "
                                       "deleted", None, None)
            else:
                job = self._ensure(store_builder.fetch_job(store_model, artifact, self.settings), job, actions)
                observed = observe(store_model, claim, job,
                                   snapshot.store_pods_of(meta["namespace"], meta["name"]),
                                   pod_status.log_reader(self.store))
        except (apply.ForeignChild, ValueError) as exc:
            observed = ("Error", str(exc), None, None)
        except errors.Invalid as exc:
            observed = ("Error", f"the store refused a child: {exc.message}", None, None)
        new = status(store_model, observed, now)
        if changed(store_model.get("status"), new):
            try:
                updated = self.store.patch_status("StoreModel", meta["namespace"], meta["name"], new)
            except errors.NotFound:
                return actions
            store_model["status"] = (updated or {}).get("status", new)   # the deployments of this pass read it
            actions.append(("status", "StoreModel", meta["name"]))
        return actions

    def _delete(self, obj, actions):
        meta = obj["metadata"]
        try:
            self.store.delete(obj["kind"], meta["namespace"], meta["name"])
        except errors.NotFound:
            return
        actions.append(("deleted", obj["kind"], meta["name"]))
