"""Control plane settings, read once from the environment (the chart sets them; embedded mode passes its own)."""
import os
from dataclasses import dataclass, field

from foundry_inference.config import ConfigurationError
from foundry_inference.envreader import EnvReader


class SettingsError(ConfigurationError):
    pass


def _list(value):
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


@dataclass(frozen=True)
class ControlPlaneSettings:
    operator_namespace: str = "foundry-local-operator"
    watch_namespaces: tuple | None = None          # None: every namespace (embedded mode)
    registry_allowlist: tuple = field(default_factory=tuple)
    max_body_bytes: int = 1024 * 1024
    catalog_configmap: str = "foundry-local-catalog"
    catalog_cache_s: float = 2.0
    read_cache: bool = True                        # GET one deployment from a watch-fed cache (Kubernetes store)
    # how long a rotated key takes to reach every replica: the rotate answer's key.effectiveAt (docs/api.md)
    key_propagation_s: float = 5.0
    metrics_port: int = 0                          # a keyless /metrics-only listener on 0.0.0.0 (0: none)

    @classmethod
    def from_env(cls, env=None):
        r = EnvReader(os.environ if env is None else env, SettingsError)
        watch = _list(r.text("FOUNDRY_WATCH_NAMESPACES"))
        return cls(operator_namespace=r.text("FOUNDRY_OPERATOR_NAMESPACE") or "foundry-local-operator",
                   watch_namespaces=None if not watch or watch == ("*",) else watch,
                   registry_allowlist=_list(r.text("FOUNDRY_REGISTRY_ALLOWLIST")),
                   max_body_bytes=r.integer("FOUNDRY_MAX_BODY_BYTES", 1024 * 1024, low=1024, high=64 * 1024 * 1024),
                   catalog_cache_s=r.number("FOUNDRY_CATALOG_CACHE_S", 2.0, low=0, high=3600),
                   read_cache=r.flag("FOUNDRY_READ_CACHE", True),
                   key_propagation_s=r.number("FOUNDRY_KEY_PROPAGATION_S", 5.0, low=0, high=3600),
                   metrics_port=r.integer("FOUNDRY_METRICS_PORT", 0, low=0, high=65535))
