"""One pass's view of the world: each kind listed once per watched namespace (paginated), children indexed by the
deployment they belong to. An idle pass therefore costs a fixed number of list calls per namespace (plus one page
per `pageSize` objects), never a GET per object."""
from dataclasses import dataclass, field

from foundry_inference.store import errors

from . import names

OWNER_KINDS = ("ModelDeployment", "InferenceService")
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "Secret", "Ingress")
STORE_KINDS = ("PersistentVolumeClaim", "Job")     # a StoreModel's children (storeModel.enabled, cluster only)


@dataclass
class Snapshot:
    owners: list = field(default_factory=list)
    models: dict = field(default_factory=dict)      # namespace -> {name: Model}
    children: dict = field(default_factory=dict)    # (namespace, deployment label) -> {(kind, name): object}
    pods: dict = field(default_factory=dict)        # (namespace, deployment label) -> [Pod] (cluster only)
    store_models: dict = field(default_factory=dict)    # namespace -> {name: StoreModel} (storeModel.enabled)
    store_children: dict = field(default_factory=dict)  # (namespace, StoreModel) -> {(kind, name): object}
    store_pods: dict = field(default_factory=dict)      # (namespace, StoreModel) -> [its fetch Job's Pods]

    def children_of(self, namespace, name):
        return self.children.get((namespace, name), {})

    def pods_of(self, namespace, name):
        return self.pods.get((namespace, name), [])

    def models_in(self, namespace):
        return self.models.get(namespace, {})

    def store_models_in(self, namespace):
        return self.store_models.get(namespace, {})

    def store_children_of(self, namespace, name):
        return self.store_children.get((namespace, name), {})

    def store_pods_of(self, namespace, name):
        return self.store_pods.get((namespace, name), [])


def list_all(store, kind, namespace, selector, page_size):
    """Every object of a kind; an expired continue token restarts the list once (as client-go's pager does)."""
    for attempt in range(2):
        try:
            return store.list_all(kind, namespace, label_selector=selector, page_size=page_size)
        except errors.Gone:
            if attempt:
                raise
    return []


def _controller(obj):
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None) or {}


def _from_replicaset_of(pod, deployment):
    """A pod of the Deployment's own ReplicaSets (`<deployment>-<hash>`), not just any pod wearing its labels."""
    ref = _controller(pod)
    return ref.get("kind") == "ReplicaSet" and (ref.get("name") or "").startswith(f"{deployment}-")


def _controlled_by(obj, kind, name):
    """A StoreModel's fetch pod is its Job's, not any pod wearing the label."""
    ref = _controller(obj)
    return ref.get("kind") == kind and ref.get("name") == name


def take(store, namespaces, page_size=500, pool=None, pods=False, stores=False):
    """`namespaces`: a list of names, or None for every namespace. With a thread pool the lists run concurrently
    (the apiserver serialises one while the operator decodes another). `pods`: list the children's pods too (on a
    cluster; the embedded store has none). `stores`: the StoreModels and their children too (the model cache)."""
    jobs = []
    for ns in namespaces or [None]:
        jobs += [(kind, ns, None) for kind in (*OWNER_KINDS, "Model") + (("StoreModel",) if stores else ())]
        jobs += [(kind, ns, names.SELECTOR) for kind in CHILD_KINDS + (("Pod",) if pods else ())
                 + (STORE_KINDS if stores else ())]
    if pool is None:
        results = [list_all(store, kind, ns, selector, page_size) for kind, ns, selector in jobs]
    else:
        futures = [pool.submit(list_all, store, kind, ns, selector, page_size) for kind, ns, selector in jobs]
        results = [f.result() for f in futures]
    snap = Snapshot()
    for (kind, _ns, _selector), items in zip(jobs, results, strict=True):
        if kind in OWNER_KINDS:
            snap.owners += items
        elif kind in ("Model", "StoreModel"):
            found = snap.models if kind == "Model" else snap.store_models
            for obj in items:
                meta = obj["metadata"]
                found.setdefault(meta["namespace"], {})[meta["name"]] = obj
        else:
            for obj in items:
                meta = obj["metadata"]
                labels = meta.get("labels") or {}
                owner = labels.get(names.DEPLOYMENT_LABEL)
                cache = labels.get(names.STORE_LABEL)
                if cache and not owner:
                    if kind == "Pod":
                        if _controlled_by(obj, "Job", names.store_job(cache)):
                            snap.store_pods.setdefault((meta["namespace"], cache), []).append(obj)
                    else:
                        snap.store_children.setdefault((meta["namespace"], cache), {})[(obj["kind"], meta["name"])] \
                            = obj
                elif owner and kind == "Pod":
                    if _from_replicaset_of(obj, owner):
                        snap.pods.setdefault((meta["namespace"], owner), []).append(obj)
                elif owner:
                    snap.children.setdefault((meta["namespace"], owner), {})[(obj["kind"], meta["name"])] = obj
    return snap
