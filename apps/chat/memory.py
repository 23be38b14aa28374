"""How much of the KV cache fits in the memory this process may use.

The chat engine allocates one KV row per slot for the whole context (`2 x layers x kv_heads x context x head_size`
values per slot) and makes it resident at load. With a model's full context that can exceed a pod's memory limit
(4 slots x context 8192 of SmolLM2-135M take 1.06 GiB, more than the chart's default 1 GiB limit), and the kernel
then kills the server in a loop. So the context is lowered, with a warning, until the KV cache takes at most half of
the container's memory limit (cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`); the rest is left for the model's
weights and onnxruntime. Without a limit (a developer machine, embedded mode) nothing changes. FOUNDRY_CHAT_MAX_CONTEXT
and FOUNDRY_CHAT_MAX_BATCH set it by hand.
"""
import logging

log = logging.getLogger("foundry_inference.chat")

KV_SHARE = 0.5          # of the memory limit, for the KV cache
_UNLIMITED = 1 << 60    # cgroup v1 writes a huge number for "no limit"
_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
CONTEXT_STEP = 256


def memory_limit_bytes(files=_LIMIT_FILES):
    """The container's memory limit in bytes, or None when there is none (or it cannot be read)."""
    for path in files:
        try:
            with open(path) as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            value = int(raw)
        except ValueError:
            continue
        return value if 0 < value < _UNLIMITED else None
    return None


def fit_context(context, slots, bytes_per_token, limit=None):
    """The largest context (a multiple of CONTEXT_STEP, at most `context`) whose KV cache for `slots` slots takes at
    most KV_SHARE of the memory limit; `context` itself when it fits or there is no limit."""
    limit = memory_limit_bytes() if limit is None else limit
    if not limit:
        return context
    most = int(limit * KV_SHARE) // (slots * bytes_per_token)
    if most >= context:
        return context
    fitted = max(CONTEXT_STEP, most // CONTEXT_STEP * CONTEXT_STEP)
    log.warning("the KV cache of %d slots x context %d would take %.0f MiB of the %.0f MiB memory limit: context "
                "lowered to %d (raise the memory limit, or set FOUNDRY_CHAT_MAX_CONTEXT / FOUNDRY_CHAT_MAX_BATCH)",
                slots, context, slots * context * bytes_per_token / 2 ** 20, limit / 2 ** 20, fitted)
    return fitted
