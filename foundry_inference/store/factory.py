"""Open the store a component was configured for: the Kubernetes apiserver or the embedded SQLite file."""
import os
from pathlib import Path


def default_data_dir():
    return Path(os.environ.get("FOUNDRY_DATA_DIR", Path.home() / ".local" / "share" / "foundry-inference"))


def open_store(backend="kubernetes", data_dir=None, kubeconfig=None):
    if backend == "embedded":
        from .embedded import EmbeddedStore
        data_dir = Path(data_dir or default_data_dir())
        data_dir.mkdir(parents=True, exist_ok=True)
        return EmbeddedStore.with_chart_crds(data_dir / "store.db")
    if backend == "kubernetes":
        from .kube import KubernetesStore
        return KubernetesStore(kubeconfig=kubeconfig)
    raise ValueError(f"unknown store backend {backend!r} (kubernetes or embedded)")


def with_read_cache(store, kinds, namespaces=None):
    """`store` with single GETs of `kinds` answered from a list+watch cache where the store can watch (Kubernetes);
    other stores are returned as they are (the embedded store reads from a local file already)."""
    if not hasattr(store, "watch"):
        return store
    from .watchcache import CachedStore
    return CachedStore(store, kinds, namespaces)
