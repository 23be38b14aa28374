"""Token choice: greedy, logit bias, penalties, temperature/top-k/top-p sampling, seeds."""
import numpy as np
import pytest

from foundry_inference.apps.chat.engine import SamplingParams
from foundry_inference.apps.chat.sampling import Sampler

pytestmark = pytest.mark.unit


def logits(*values):
    return np.array(values, dtype=np.float32)


def test_greedy_is_argmax_without_copy():
    s = Sampler(SamplingParams())
    assert s.plain_greedy
    assert s.choose(logits(0.1, 3.0, 2.0)) == 1


def test_logit_bias_can_force_and_ban():
    assert Sampler(SamplingParams(logit_bias=((0, 100.0),))).choose(logits(0.0, 5.0, 1.0)) == 0
    assert Sampler(SamplingParams(logit_bias=((1, -100.0),))).choose(logits(0.0, 5.0, 1.0)) == 2


def test_frequency_and_presence_penalties_follow_openai():
    s = Sampler(SamplingParams(frequency_penalty=1.0, presence_penalty=0.5))
    s.observe(1)
    s.observe(1)
    x = s.adjusted(logits(0.0, 5.0, 1.0))
    assert x[1] == pytest.approx(5.0 - 2 * 1.0 - 0.5)
    assert x[0] == 0.0 and x[2] == 1.0


def test_repetition_penalty_covers_the_prompt():
    s = Sampler(SamplingParams(repetition_penalty=2.0), prompt_ids=[1, 2])
    x = s.adjusted(logits(1.0, 4.0, -1.0))
    assert list(x) == [1.0, 2.0, -2.0]


def test_same_seed_same_samples_and_distribution():
    params = SamplingParams(do_sample=True, temperature=1.0, seed=5)
    row = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    a = [Sampler(params, rng_seed=5).choose(row) for _ in range(1)]
    b = [Sampler(params, rng_seed=5).choose(row) for _ in range(1)]
    assert a == b
    s = Sampler(params, rng_seed=7)
    counts = np.bincount([s.choose(row) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.04)


def test_top_k_and_top_p_restrict_the_candidates():
    row = np.log(np.array([0.4, 0.3, 0.2, 0.1], dtype=np.float32))
    s = Sampler(SamplingParams(do_sample=True, top_k=2), rng_seed=1)
    assert {s.choose(row) for _ in range(300)} == {0, 1}
    s = Sampler(SamplingParams(do_sample=True, top_p=0.65), rng_seed=1)
    assert {s.choose(row) for _ in range(300)} == {0, 1}
    s = Sampler(SamplingParams(do_sample=True, top_p=1e-9), rng_seed=1)
    assert {s.choose(row) for _ in range(50)} == {0}


def test_nucleus_over_a_large_vocabulary_matches_the_full_sort():
    rng = np.random.default_rng(0)
    row = rng.normal(size=50_000).astype(np.float32) * 3
    s = Sampler(SamplingParams(do_sample=True, top_p=0.5), rng_seed=3)
    picks = {s.choose(row) for _ in range(200)}
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    nucleus = set(order[:np.searchsorted(np.cumsum(probs[order]), 0.5) + 1].tolist())
    assert picks <= nucleus


def test_low_temperature_is_nearly_greedy():
    s = Sampler(SamplingParams(do_sample=True, temperature=0.01), rng_seed=2)
    assert {s.choose(logits(1.0, 2.0, 1.5)) for _ in range(100)} == {1}
