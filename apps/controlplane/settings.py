"""Control plane settings, read once from the environment (the chart sets them; embedded mode passes its own)."""
import os
from dataclasses import dataclass, field

from foundry_inference.config import ConfigurationError


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

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        try:
            max_body = int(env.get("FOUNDRY_MAX_BODY_BYTES", 1024 * 1024))
            cache = float(env.get("FOUNDRY_CATALOG_CACHE_S", 2.0))
        except ValueError as exc:
            raise SettingsError(f"bad numeric setting: {exc}") from None
        if not 1024 <= max_body <= 64 * 1024 * 1024:
            raise SettingsError("FOUNDRY_MAX_BODY_BYTES must be between 1 KiB and 64 MiB")
        read_cache = (env.get("FOUNDRY_READ_CACHE") or "true").strip().lower()
        if read_cache not in ("true", "false", "1", "0"):
            raise SettingsError("FOUNDRY_READ_CACHE must be true or false")
        watch = _list(env.get("FOUNDRY_WATCH_NAMESPACES"))
        return cls(operator_namespace=env.get("FOUNDRY_OPERATOR_NAMESPACE", "foundry-local-operator"),
                   watch_namespaces=None if not watch or watch == ("*",) else watch,
                   registry_allowlist=_list(env.get("FOUNDRY_REGISTRY_ALLOWLIST")),
                   max_body_bytes=max_body, catalog_cache_s=cache, read_cache=read_cache in ("true", "1"))
