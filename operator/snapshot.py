"""One pass's view of the world: each kind listed once per watched namespace (paginated), children indexed by the
deployment they belong to. An idle pass therefore costs a fixed number of list calls per namespace (plus one page
per `pageSize` objects), never a GET per object."""
from dataclasses import dataclass, field

from foundry_inference.store import errors

from . import names

OWNER_KINDS = ("ModelDeployment", "InferenceService")
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "Secret", "Ingress")


@dataclass
class Snapshot:
    owners: list = field(default_factory=list)
    models: dict = field(default_factory=dict)      # namespace -> {name: Model}
    children: dict = field(default_factory=dict)    # (namespace, deployment label) -> {(kind, name): object}
    pods: dict = field(default_factory=dict)        # (namespace, deployment label) -> [Pod] (cluster only)

    def children_of(self, namespace, name):
        return self.children.get((namespace, name), {})

    def pods_of(self, namespace, name):
        return self.pods.get((namespace, name), [])

    def models_in(self, namespace):
        return self.models.get(namespace, {})


def list_all(store, kind, namespace, selector, page_size):
    """Every object of a kind; an expired continue token restarts the list once (as client-go's pager does)."""
    for attempt in range(2):
        try:
            return store.list_all(kind, namespace, label_selector=selector, page_size=page_size)
        except errors.Gone:
            if attempt:
                raise
    return []


def _from_replicaset_of(pod, deployment):
    """A pod of the Deployment's own ReplicaSets (`<deployment>-<hash>`), not just any pod wearing its labels."""
    ref = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
    return ref is not None and ref.get("kind") == "ReplicaSet" and (ref.get("name") or "").startswith(f"{deployment}-")


def take(store, namespaces, page_size=500, pool=None, pods=False):
    """`namespaces`: a list of names, or None for every namespace. With a thread pool the lists run concurrently
    (the apiserver serialises one while the operator decodes another). `pods`: list the children's pods too (on a
    cluster; the embedded store has none)."""
    jobs = []
    for ns in namespaces or [None]:
        jobs += [(kind, ns, None) for kind in (*OWNER_KINDS, "Model")]
        jobs += [(kind, ns, names.SELECTOR) for kind in CHILD_KINDS + (("Pod",) if pods else ())]
    if pool is None:
        results = [list_all(store, kind, ns, selector, page_size) for kind, ns, selector in jobs]
    else:
        futures = [pool.submit(list_all, store, kind, ns, selector, page_size) for kind, ns, selector in jobs]
        results = [f.result() for f in futures]
    snap = Snapshot()
    for (kind, _ns, _selector), items in zip(jobs, results, strict=True):
        if kind in OWNER_KINDS:
            snap.owners += items
        elif kind == "Model":
            for model in items:
                meta = model["metadata"]
                snap.models.setdefault(meta["namespace"], {})[meta["name"]] = model
        else:
            for obj in items:
                meta = obj["metadata"]
                owner = (meta.get("labels") or {}).get(names.DEPLOYMENT_LABEL)
                if owner and kind == "Pod":
                    if _from_replicaset_of(obj, owner):
                        snap.pods.setdefault((meta["namespace"], owner), []).append(obj)
                elif owner:
                    snap.children.setdefault((meta["namespace"], owner), {})[(obj["kind"], meta["name"])] = obj
    return snap
