"""Choosing the next token from a row of logits: OpenAI's logit_bias, presence/frequency penalties, the Hugging Face
repetition penalty, temperature, top-k and nucleus (top-p) sampling, with a per-choice seeded generator so the same
seed gives the same output.

Greedy choices with nothing to adjust take a plain argmax over the engine's logits buffer (no copy): that is the hot
path of a single greedy stream and must cost nothing next to the model.
"""
import numpy as np

_NUCLEUS_PREFILTER = 1024   # top-p first looks at this many best tokens; the full sort only when they fall short


class Sampler:
    def __init__(self, params, prompt_ids=(), rng_seed=None):
        self.params = params
        self.plain_greedy = not params.needs_logits
        self.counts = {}                      # generated token -> occurrences (presence/frequency penalties)
        self.seen = set(int(t) for t in prompt_ids) if params.repetition_penalty != 1.0 else set()
        self.rng = np.random.Generator(np.random.PCG64(rng_seed)) if params.do_sample else None
        if params.logit_bias:
            self.bias_ids = np.array([t for t, _ in params.logit_bias], dtype=np.int64)
            self.bias_values = np.array([b for _, b in params.logit_bias], dtype=np.float32)
        else:
            self.bias_ids = None

    def observe(self, token):
        self.counts[token] = self.counts.get(token, 0) + 1
        if self.params.repetition_penalty != 1.0:
            self.seen.add(token)

    def choose(self, logits):
        """The next token for `logits` (a 1-D float32 view the caller may reuse afterwards)."""
        if self.plain_greedy:
            return int(np.argmax(logits))
        x = self.adjusted(logits)
        if not self.params.do_sample:
            return int(np.argmax(x))
        return self.sample(x)

    def adjusted(self, logits):
        p = self.params
        x = np.array(logits, dtype=np.float32, copy=True)
        if self.bias_ids is not None:
            x[self.bias_ids] += self.bias_values
        if p.repetition_penalty != 1.0 and self.seen:
            ids = np.fromiter(self.seen, dtype=np.int64)
            vals = x[ids]
            x[ids] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            ids = np.fromiter(self.counts.keys(), dtype=np.int64)
            counts = np.fromiter(self.counts.values(), dtype=np.float32)
            x[ids] -= counts * p.frequency_penalty + p.presence_penalty
        return x

    def sample(self, x):
        p = self.params
        if p.temperature > 0 and p.temperature != 1.0:
            x = x / p.temperature
        if p.top_k and p.top_k < x.shape[0]:
            ids = np.argpartition(-x, p.top_k - 1)[:p.top_k]
        else:
            ids = None
        if ids is not None:
            logits = x[ids]
        else:
            logits = x
        probs = _softmax(logits)
        if p.top_p < 1.0:
            ids, probs = _nucleus(ids, probs, p.top_p)
        r = self.rng.random() * probs.sum()
        pick = int(np.searchsorted(np.cumsum(probs, dtype=np.float64), r, side="right"))
        pick = min(pick, probs.shape[0] - 1)
        return int(ids[pick]) if ids is not None else pick


def _softmax(x):
    m = np.max(x)
    e = np.exp((x - m).astype(np.float64))
    return e / e.sum()


def _nucleus(ids, probs, top_p):
    """The smallest set of most likely tokens whose mass reaches top_p (ids: None for the whole vocabulary)."""
    count = probs.shape[0]
    if count > _NUCLEUS_PREFILTER:
        head = np.argpartition(-probs, _NUCLEUS_PREFILTER - 1)[:_NUCLEUS_PREFILTER]
        if probs[head].sum() >= top_p:
            order = head[np.argsort(-probs[head], kind="stable")]
        else:
            order = np.argsort(-probs, kind="stable")
    else:
        order = np.argsort(-probs, kind="stable")
    sorted_probs = probs[order]
    cut = int(np.searchsorted(np.cumsum(sorted_probs), top_p, side="left")) + 1
    keep = order[:max(1, min(cut, order.shape[0]))]
    new_ids = keep if ids is None else ids[keep]
    return new_ids, probs[keep]
