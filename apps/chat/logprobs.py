"""Token log-probabilities (OpenAI `logprobs` / `top_logprobs`), computed from the model's raw logits.

The values are a log-softmax of the logits the decoder produced for that position, before logit_bias, penalties,
temperature, top-k/top-p or the min_tokens end-of-turn mask (vLLM's default, "raw logprobs"): they describe the
model, not the sampler. A choice that asks for them pays one log-softmax over the vocabulary per token (plus a
partial sort for the top alternatives); a choice that does not pays nothing.

The engine thread books one `TokenLogprob` per generated token (the end-of-turn token excluded) and hands them to the
HTTP side with the text they produced; `chat_content` and `legacy` render the two OpenAI shapes.
"""
from dataclasses import dataclass

import numpy as np

MAX_TOP_CHAT = 20      # OpenAI: top_logprobs 0..20 on chat completions
MAX_TOP_LEGACY = 5     # OpenAI: logprobs 0..5 on legacy completions


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple = ()        # ((token text, logprob), ...) most likely first


class Scorer:
    """The log-softmax of one position's logits; `entry(token)` books the chosen token with its alternatives."""
    __slots__ = ("logprobs", "top")

    def __init__(self, row, top):
        x = np.asarray(row, dtype=np.float64)
        m = float(np.max(x))
        self.logprobs = x - (m + np.log(np.sum(np.exp(x - m))))
        self.top = top

    def entry(self, token, text_of):
        lp = self.logprobs
        alternatives = ()
        if self.top:
            k = min(self.top, lp.shape[0])
            ids = np.argpartition(-lp, k - 1)[:k]
            ids = ids[np.argsort(-lp[ids], kind="stable")]
            alternatives = tuple((text_of(int(i)), float(lp[i])) for i in ids)
        return TokenLogprob(text_of(int(token)), float(lp[token]), alternatives)


class TokenTexts:
    """Token id -> its text alone (cached). A token holding part of a UTF-8 character decodes to U+FFFD, as in
    OpenAI's answers; the `bytes` field of the chat shape carries the text's UTF-8 bytes."""

    def __init__(self, decode):
        self._decode = decode
        self._cache = {}

    def __call__(self, token):
        text = self._cache.get(token)
        if text is None:
            text = self._cache[token] = self._decode(token)
        return text


def _utf8(text):
    return list(text.encode("utf-8"))


def chat_content(entries):
    """The `content` list of a chat choice's `logprobs` object."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": _utf8(e.token),
             "top_logprobs": [{"token": t, "logprob": v, "bytes": _utf8(t)} for t, v in e.top]} for e in entries]


def chat_logprobs(entries):
    return {"content": chat_content(entries), "refusal": None}


def legacy(entries, offset=0):
    """The legacy completions `logprobs` object: parallel lists; `text_offset` counts characters from `offset`."""
    tokens, values, tops, offsets = [], [], [], []
    for e in entries:
        tokens.append(e.token)
        values.append(e.logprob)
        tops.append(dict(e.top))
        offsets.append(offset)
        offset += len(e.token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
