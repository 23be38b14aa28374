"""OpenAI Chat Completions: request validation (every problem is a 400 naming the field in `param`) and the shapes of
answers and stream chunks.

Fields this engine cannot honour are refused with a clear 400 instead of being ignored (`n` above the configured
maximum, response_format without constrained decoding, `logprobs` together with constrained decoding); fields OpenAI
accepts but that do not change the answer (`user`, `metadata`, `store`, `service_tier`, `parallel_tool_calls`, ...)
are accepted, as OpenAI accepts them. docs/chat-server.md has the table of every field.
"""
import json
import secrets
import time
from dataclasses import dataclass

from foundry_inference.apps.base import ApiError
from foundry_inference.apps.chat.engine import SamplingParams
from foundry_inference.apps.chat.logprobs import MAX_TOP_CHAT
from foundry_inference.apps.chat.template import tool_call_schema

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_STOPS = 4
GRAMMAR_TYPES = ("json_schema", "regex", "lark_grammar")


def invalid(message, param, code="invalid_value"):
    return ApiError(400, "invalid_request_error", message, code=code, errors=[{"field": param, "message": message}])


@dataclass
class ChatParams:
    messages: list
    model: str
    max_tokens: int                 # None: up to the context
    min_tokens: int                 # Foundry/vLLM extra: no end of turn before this many tokens
    sampling: SamplingParams
    stop: tuple
    n: int
    stream: bool
    include_usage: bool
    tools: list                     # None or OpenAI tools
    tool_choice: object             # "none" | "auto" | "required" | function name
    guidance: tuple                 # (kind, grammar) or None
    json_mode: bool                 # response_format json: content is JSON, not tool calls
    logprobs: int = None            # None: off; else top_logprobs (0..20)


def _number(body, name, low, high, default=None, integer=False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise invalid(f"'{name}' must be {'an integer' if integer else 'a number'}", name, "invalid_type")
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low} and {high}, got {value}", name)
    return int(value) if integer else float(value)


def _bool(body, name, default=False):
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean", name, "invalid_type")
    return value


number, flag = _number, _bool      # for the other OpenAI routes' parsers


def parse_chat_request(body, engine, *, max_n, model_defaults):
    """Validate an OpenAI chat request body against `engine`'s capabilities -> ChatParams (or raise ApiError)."""
    model = model_name(body)
    _refuse_unsupported(body)
    messages = _messages(body.get("messages"))
    tools, tool_choice = _tools(body)

    max_tokens = _number(body, "max_completion_tokens", 1, 1 << 31, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, 1 << 31, integer=True)
    min_tokens = _number(body, "min_tokens", 0, 1 << 31, 0, integer=True)
    sampling = sampling_params(body, engine, model_defaults)
    n = choice_count(body, max_n)
    logprobs = _logprobs(body)
    stop = stop_sequences(body.get("stop"))
    stream, include_usage = stream_flags(body)
    guidance, json_mode = _response_format(body.get("response_format"), engine)
    if logprobs is not None and (guidance or (tools and tool_choice not in ("none", "auto"))):
        raise invalid("'logprobs' cannot be combined with constrained decoding (response_format json or a forced "
                      "tool_choice) on this engine", "logprobs", "unsupported_parameter")

    forced = tools and tool_choice not in ("none", "auto")
    if forced:
        if guidance:
            raise invalid("'response_format' cannot be combined with a forced 'tool_choice'", "response_format")
        if not engine.supports_guidance:
            raise invalid("'tool_choice' required/named needs constrained decoding, which this engine lacks",
                          "tool_choice", "unsupported_parameter")
        name = tool_choice if tool_choice != "required" else None
        guidance = ("json_schema", json.dumps(tool_call_schema(tools, name)))

    if guidance and (sampling.logit_bias or sampling.presence_penalty or sampling.frequency_penalty
                     or sampling.repetition_penalty != 1.0):
        raise invalid("'logit_bias' and the penalties cannot be combined with constrained decoding "
                      "(response_format json or a forced tool_choice) on this engine", "logit_bias",
                      "unsupported_parameter")
    return ChatParams(messages=messages, model=model, max_tokens=max_tokens, min_tokens=min_tokens,
                      sampling=sampling, stop=stop, n=n, stream=stream, include_usage=include_usage,
                      tools=tools if tool_choice != "none" else None, tool_choice=tool_choice, guidance=guidance,
                      json_mode=json_mode, logprobs=logprobs)


# OpenAI chat fields that would change the answer but that this server cannot honour: a 400 naming them, never a
# silent answer without them (fields that do not change the answer, e.g. `prediction`, `store`, are accepted)
UNSUPPORTED = {
    "audio": "audio output is not supported by this server",
    "web_search_options": "web search is not supported by this server",
    "reasoning_effort": "'reasoning_effort' is only for reasoning models; this model does not take it",
    "verbosity": "'verbosity' is not supported by this model",
}


def _refuse_unsupported(body):
    for field, message in UNSUPPORTED.items():
        if body.get(field) is not None:
            raise invalid(message, field, "unsupported_parameter")
    modalities = body.get("modalities")
    if modalities is not None:
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise invalid("'modalities' must be an array of strings", "modalities", "invalid_type")
        if any(m != "text" for m in modalities):
            raise invalid("only the 'text' modality is supported by this server", "modalities",
                          "unsupported_parameter")


def model_name(body):
    model = body.get("model")
    if model is None:
        raise invalid("'model' is required", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise invalid("'model' must be a string", "model", "invalid_type")
    return model


def choice_count(body, max_n):
    n = _number(body, "n", 1, 1 << 20, 1, integer=True)
    if n > max_n:
        raise invalid(f"'n' must be at most {max_n} on this server (each choice is generated), got {n}", "n")
    return n


def stream_flags(body):
    """(stream, include_usage) from `stream` and `stream_options`."""
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise invalid("'stream_options' is only allowed when 'stream' is true", "stream_options")
    if not isinstance(options, dict):
        raise invalid("'stream_options' must be an object", "stream_options", "invalid_type")
    return stream, _bool(options, "include_usage")


def sampling_params(body, engine, defaults):
    """SamplingParams from the request's sampling fields; the model's own defaults (genai_config "search") apply
    where the request says nothing."""
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    top_k = _number(body, "top_k", 0, 1 << 20, integer=True)
    seed = _number(body, "seed", -(1 << 63), (1 << 64) - 1, integer=True)
    if seed is None:
        seed = _number(body, "random_seed", -(1 << 63), (1 << 64) - 1, integer=True)
    presence = _number(body, "presence_penalty", -2, 2, 0.0)
    frequency = _number(body, "frequency_penalty", -2, 2, 0.0)
    repetition = _number(body, "repetition_penalty", 0.01, 100, None)
    logit_bias = _logit_bias(body.get("logit_bias"), engine)
    if temperature is None:
        do_sample = defaults["do_sample"]
        temperature = defaults["temperature"]
    else:
        do_sample = temperature > 0
    if top_p is None:
        top_p = defaults["top_p"]
    if top_k is None:
        top_k = defaults["top_k"] if do_sample else 0
    if top_p <= 0:
        top_p = 1e-9           # OpenAI accepts 0: only the most likely token
    return SamplingParams(
        do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
        presence_penalty=presence, frequency_penalty=frequency,
        repetition_penalty=repetition if repetition is not None else defaults["repetition_penalty"],
        logit_bias=logit_bias)


def _logprobs(body):
    """None (off) or the number of alternatives per token (0..20)."""
    on = _bool(body, "logprobs")
    top = _number(body, "top_logprobs", 0, MAX_TOP_CHAT, integer=True)
    if top is not None and not on:
        raise invalid("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return (top or 0) if on else None


def _messages(messages):
    if messages is None:
        raise invalid("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object", where, "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise invalid(f"{where}.content[{j}]: only text parts are supported by this model, got {kind!r}",
                                  f"{where}.content")
                if not isinstance(part.get("text"), str):
                    raise invalid(f"{where}.content[{j}].text must be a string", f"{where}.content")
            content = [{"type": "text", "text": p["text"]} for p in content]
        elif content is not None and not isinstance(content, str):
            raise invalid(f"{where}.content must be a string or an array of text parts", f"{where}.content",
                          "invalid_type")
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant":
                raise invalid(f"{where}.tool_calls is only allowed on assistant messages", f"{where}.tool_calls")
            _check_calls(calls, where)
        if content is None and not (role == "assistant" and (calls or message.get("function_call"))):
            raise invalid(f"{where}.content is required", f"{where}.content", "missing_required_parameter")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise invalid(f"{where}.tool_call_id is required on tool messages", f"{where}.tool_call_id",
                          "missing_required_parameter")
        clean = {"role": "tool" if role == "function" else role, "content": content}
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                clean[key] = message[key]
        if calls:
            clean["tool_calls"] = calls
        if role == "assistant" and isinstance(message.get("function_call"), dict) and not calls:
            fc = message["function_call"]
            clean["tool_calls"] = [{"id": "call_legacy", "type": "function",
                                    "function": {"name": fc.get("name"), "arguments": fc.get("arguments", "{}")}}]
        out.append(clean)
    return out


def _check_calls(calls, where):
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls must be an array", f"{where}.tool_calls", "invalid_type")
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise invalid(f"{where}.tool_calls[{k}].function.name is required", f"{where}.tool_calls")


def _tools(body):
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None and body.get("functions") is not None:          # the legacy shape
        functions = body["functions"]
        if not isinstance(functions, list):
            raise invalid("'functions' must be an array", "functions", "invalid_type")
        tools = [{"type": "function", "function": f} for f in functions]
        legacy = body.get("function_call")
        if isinstance(legacy, dict):
            choice = {"type": "function", "function": {"name": legacy.get("name")}}
        elif legacy is not None:
            choice = legacy
    if tools is None:
        if choice not in (None, "none"):
            raise invalid("'tool_choice' needs 'tools'", "tool_choice")
        return None, "none"
    if not isinstance(tools, list):
        raise invalid("'tools' must be an array", "tools", "invalid_type")
    names = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise invalid(f"{where}: only tools of type 'function' are supported", where)
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise invalid(f"{where}.function.name is required", f"{where}.function.name",
                          "missing_required_parameter")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid(f"{where}.function.parameters must be a JSON schema object", f"{where}.function.parameters")
        names.append(fn["name"])
    if not tools:
        return None, "none"
    if choice is None:
        choice = "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type", "function") != "function" or not isinstance(name, str):
            raise invalid("'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": "
                          "{\"name\": ...}}", "tool_choice")
        if name not in names:
            raise invalid(f"'tool_choice' names {name!r}, which is not among the tools", "tool_choice")
        choice = name
        return tools, choice
    if choice not in ("none", "auto", "required"):
        raise invalid("'tool_choice' must be none, auto, required or a named function", "tool_choice")
    return tools, choice


def _logit_bias(bias, engine):
    if bias is None:
        return ()
    if not isinstance(bias, dict):
        raise invalid("'logit_bias' must be an object mapping token ids to biases", "logit_bias", "invalid_type")
    if bias and not engine.supports_logit_bias:
        raise invalid("'logit_bias' is not supported by this engine", "logit_bias", "unsupported_parameter")
    out = []
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise invalid(f"'logit_bias' key {key!r} is not a token id", "logit_bias") from None
        if not 0 <= token < engine.vocab_size:
            raise invalid(f"'logit_bias' token id {token} is outside the vocabulary (0..{engine.vocab_size - 1})",
                          "logit_bias")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise invalid(f"'logit_bias' value for {key} must be a number between -100 and 100", "logit_bias")
        out.append((token, float(value)))
    return tuple(out)


def stop_sequences(stop):
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("'stop' must be a string or an array of strings", "stop", "invalid_type")
    if len(stop) > MAX_STOPS:
        raise invalid(f"'stop' takes at most {MAX_STOPS} sequences, got {len(stop)}", "stop")
    if any(not s for s in stop):
        raise invalid("'stop' sequences must not be empty", "stop")
    return tuple(stop)


def _response_format(fmt, engine):
    if fmt is None:
        return None, False
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise invalid("'response_format' must be an object with a 'type'", "response_format", "invalid_type")
    kind = fmt["type"]
    if kind == "text":
        return None, False
    if kind not in ("json_object", "json_schema", *GRAMMAR_TYPES[1:]):
        raise invalid(f"'response_format.type' must be text, json_object or json_schema, got {kind!r}",
                      "response_format.type")
    if not engine.supports_guidance:
        raise invalid(f"'response_format' {kind} needs constrained decoding, which the {engine.name} engine lacks",
                      "response_format", "unsupported_parameter")
    if kind == "json_object":
        schema = {"type": "object"}
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name", ""), str):
            raise invalid("'response_format.json_schema' must be an object with 'name' and 'schema'",
                          "response_format.json_schema")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise invalid("'response_format.json_schema.schema' must be a JSON schema object",
                          "response_format.json_schema.schema")
        schema = dict(schema)
    else:                               # Foundry extra: {"type": "regex" | "lark_grammar", "grammar": "..."}
        grammar = fmt.get("grammar")
        if not isinstance(grammar, str) or not grammar:
            raise invalid(f"'response_format.grammar' is required for type {kind}", "response_format.grammar")
        return (kind, grammar), False
    schema.setdefault("x-guidance", {"whitespace_flexible": False})   # no endless whitespace from small models
    return ("json_schema", json.dumps(schema)), True


def context_error(prompt_tokens, context_length, field="messages"):
    return ApiError(400, "invalid_request_error",
                    f"This model's maximum context length is {context_length} tokens. However, your {field} "
                    f"resulted in {prompt_tokens} tokens. Please reduce the length of the {field}.",
                    code="context_length_exceeded", errors=[{"field": field, "message": "too long"}])


# --- answers ------------------------------------------------------------------------------------------------------

def completion_id():
    return "chatcmpl-" + secrets.token_hex(12)


def tool_call_id():
    return "call_" + secrets.token_hex(12)


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid, model, created, choices, prompt_tokens, completion_tokens):
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}


def choice(index, content, tool_calls, finish_reason, logprobs=None):
    message = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}


def chunk(cid, model, created, choices, include_usage, usage_value=None):
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices}
    if include_usage:
        body["usage"] = usage_value
    return body


def delta(index, finish_reason=None, logprobs=None, **fields):
    return {"index": index, "delta": fields, "logprobs": logprobs, "finish_reason": finish_reason}


def now():
    return int(time.time())
