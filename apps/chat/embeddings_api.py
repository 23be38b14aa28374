"""OpenAI embeddings, `POST /v1/embeddings`, on an embedding model served by the chat server's process.

`input`: a string, an array of strings, an array of token ids or an array of arrays of token ids (the model's own
vocabulary; a token array is taken as the complete sequence, special tokens included), at most 2048 inputs, none
empty and none longer than the model's token limit (a 400 naming `input[i]`: nothing is cut silently).
`encoding_format`: float (default) or base64 (little-endian float32, what the official client asks for).
`dimensions`: the model's own size, or one of the sizes it was trained to be cut to (Matryoshka; the cut vector is
normalised again); any other value is a 400. `user` is accepted and has no effect. `usage` counts every input's
tokens exactly.
"""
import asyncio
import base64

import numpy as np

from foundry_inference.apps.base import ApiError
from foundry_inference.apps.chat import protocol
from foundry_inference.apps.chat.engine import QueueFull
from foundry_inference.apps.chat.handlers import ChatBase, rate_limited
from foundry_inference.auth.tornado import AuthMixin

MAX_INPUTS = 2048          # OpenAI's limit per request


def _is_ids(value):
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def parse_inputs(value, engine):
    """Token id sequences for the request's inputs (texts tokenized by the model's tokenizer)."""
    if value is None:
        raise protocol.invalid("'input' is required", "input", "missing_required_parameter")
    if isinstance(value, str) or (_is_ids(value) and value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise protocol.invalid("'input' must be a string, an array of strings, an array of token ids or an array of "
                               "arrays of token ids", "input", "invalid_type")
    if len(items) > MAX_INPUTS:
        raise protocol.invalid(f"'input' takes at most {MAX_INPUTS} inputs, got {len(items)}", "input")
    texts = [(k, s) for k, s in enumerate(items) if isinstance(s, str)]
    for k, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise protocol.invalid(f"input[{k}] must not be empty", f"input[{k}]")
        elif not _is_ids(item) or not item:
            raise protocol.invalid(f"input[{k}] must be a non-empty string or array of token ids", f"input[{k}]",
                                   "invalid_type")
        elif any(not 0 <= t < engine.vocab_size for t in item):
            raise protocol.invalid(f"input[{k}]: token ids must be within the vocabulary (0..{engine.vocab_size - 1})",
                                   f"input[{k}]")
    sequences = [None if isinstance(s, str) else list(s) for s in items]
    for (k, _text), ids in zip(texts, engine.encode_batch([t for _k, t in texts]), strict=True):
        sequences[k] = ids
    for k, ids in enumerate(sequences):
        if len(ids) > engine.context_length:
            raise too_long(k, len(ids), engine.context_length)
    return sequences


def too_long(index, tokens, limit):
    message = (f"input[{index}] is {tokens} tokens long; this model takes at most {limit} tokens per input. Split "
               f"the text into shorter pieces.")
    return ApiError(400, "invalid_request_error", message, code="context_length_exceeded",
                    errors=[{"field": f"input[{index}]", "message": message}])


def parse_request(body, engine):
    model = protocol.model_name(body)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise protocol.invalid("'encoding_format' must be float or base64", "encoding_format")
    dims = protocol.number(body, "dimensions", 1, 1 << 20, None, integer=True)
    allowed = (engine.dimensions, *engine.config.matryoshka)
    if dims is not None and dims not in allowed:
        raise protocol.invalid(f"'dimensions' must be one of {', '.join(map(str, sorted(allowed)))} for this model, "
                               f"got {dims}", "dimensions", "unsupported_value")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise protocol.invalid("'user' must be a string", "user", "invalid_type")
    return model, parse_inputs(body.get("input"), engine), fmt, dims


def shaped(vectors, dims):
    if dims is None or dims == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dims]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def encode(vector, fmt):
    if fmt == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()
    return vector.tolist()


class EmbeddingsHandler(AuthMixin, ChatBase):
    endpoint = "embeddings"

    async def post(self):
        service = self.service
        engine = self.engine_for("embeddings")
        self.max_body_bytes = service.settings.max_body_bytes
        model, sequences, fmt, dims = parse_request(self.json_body(), engine)
        self.check_model(model)
        if len(sequences) > engine.capacity:
            raise protocol.invalid(f"'input' holds {len(sequences)} inputs; this server queues at most "
                                   f"{engine.capacity} (FOUNDRY_EMBEDDING_QUEUE_DEPTH)", "input")
        try:
            job = engine.submit(sequences, asyncio.get_running_loop())
        except QueueFull as full:
            service.metrics.rejected.labels(self.endpoint).inc()
            raise rate_limited(full, "embedding inputs") from None
        tokens = sum(len(s) for s in sequences)
        service.metrics.prompt(tokens)
        vectors = shaped(await job.future, dims)
        v = service.metrics.vllm
        v.queue.observe(max(0.0, (job.admitted_at or job.submitted_at) - job.submitted_at))
        v.e2e.observe(self.request.request_time())
        self.write_json({"object": "list", "model": service.model_id,
                         "data": [{"object": "embedding", "index": k, "embedding": encode(vec, fmt)}
                                  for k, vec in enumerate(vectors)],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
