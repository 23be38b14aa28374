"""What a deployment's spec may put into its model pod: environment variable names and vLLM engine options.

The one home of these rules. The control plane refuses a violation with a 400 naming the field; the operator, which
also sees objects written straight to the cluster, drops what breaks them and reports it in the `SettingsIgnored`
condition - either way nothing refused here ever reaches a pod.

- **env**: every `FOUNDRY_*` name (the platform's own settings: auth mode, Entra authority, authorizer, keys
  directory, ...) but the chat server's tracing opt-in `FOUNDRY_TRACING`, the dynamic loader's and the
  interpreter's (`LD_*`, `PYTHON*`, `PATH`), the operator's wiring (`PORT`), and what decides whom the server trusts
  on the network (CA bundles, proxies: a proxy plus a CA of the user's choosing would let the pod accept forged Entra
  signing keys). Compared case-insensitively.
- **vLLM**: an allowlist of engine tuning options. Everything else is refused - notably `host`, `port`, `model`,
  `served-model-name`, `api-key`, `tokenizer`, download, remote-code and plug-in options. The operator still passes
  host, port and model after the user's options, so they would win even if one got through.
"""
import re

_ENV_PREFIXES = ("FOUNDRY_", "LD_", "PYTHON")
# the one FOUNDRY_* a deployment sets itself: the chat server's tracing opt-in (docs/chat-server.md), which changes
# nothing about who may call the server (the exporter's OTEL_* settings are not the platform's)
_ENV_ALLOWED = frozenset({"FOUNDRY_TRACING"})
_ENV_NAMES = frozenset({
    "PATH", "PORT", "HOME",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "OPENSSL_CONF",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
})

VLLM_OPTIONS = frozenset({
    "async_scheduling", "block_size", "chat_template_content_format", "compilation_config", "cpu_offload_gb",
    "data_parallel_size", "disable_custom_all_reduce", "disable_log_requests", "disable_log_stats",
    "disable_sliding_window", "dtype", "enable_auto_tool_choice", "enable_chunked_prefill", "enable_expert_parallel",
    "enable_log_requests", "enable_prefix_caching", "enable_reasoning", "enforce_eager", "gpu_memory_utilization",
    "guided_decoding_backend", "kv_cache_dtype", "limit_mm_per_prompt", "max_cudagraph_capture_size", "max_logprobs",
    "max_model_len", "max_num_batched_tokens", "max_num_seqs", "max_parallel_loading_workers",
    "max_seq_len_to_capture", "mm_processor_kwargs", "no_enable_chunked_prefill", "no_enable_prefix_caching",
    "num_scheduler_steps", "override_generation_config", "pipeline_parallel_size", "preemption_mode", "quantization",
    "reasoning_parser", "response_role", "return_tokens_as_token_ids", "rope_scaling", "rope_theta",
    "scheduling_policy", "seed", "swap_space", "tensor_parallel_size", "tokenizer_mode", "tool_call_parser",
    "uvicorn_log_level",
})
_OPTION = re.compile(r"^[a-z][a-z0-9_-]*$")


def env_name_refused(name):
    """Why `name` may not be set through spec.env, or None when it may."""
    upper = str(name).upper()
    if str(name) in _ENV_ALLOWED:
        return None
    if upper in _ENV_NAMES or upper.startswith(_ENV_PREFIXES):
        return ("is reserved for the platform (FOUNDRY_*, LD_*, PYTHON*, PATH, PORT, HOME, CA bundle and proxy "
                "variables)")
    return None


def vllm_option(key):
    """The canonical (underscore) name of a vLLM option, or None when it is not one a user may set."""
    key = str(key)
    if not _OPTION.match(key):
        return None
    canonical = key.replace("-", "_")
    return canonical if canonical in VLLM_OPTIONS else None
