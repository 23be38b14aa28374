"""The KV cache is fitted into the container's memory limit instead of getting the server OOM-killed in a loop (a
SmolLM2 pod with the chart's default 1 GiB limit was killed at load: 4 slots x context 8192 = 1.06 GiB of KV)."""
import pytest

from foundry_inference.apps.chat import memory

pytestmark = pytest.mark.unit

SMOLLM2_PER_TOKEN = 2 * 30 * 3 * 64 * 4       # k+v x layers x kv_heads x head_size x float32


def test_a_kv_cache_larger_than_half_the_limit_gets_a_shorter_context(caplog):
    fitted = memory.fit_context(8192, 4, SMOLLM2_PER_TOKEN, limit=1 << 30)
    assert fitted % memory.CONTEXT_STEP == 0 and 0 < fitted < 8192
    assert 4 * fitted * SMOLLM2_PER_TOKEN <= memory.KV_SHARE * (1 << 30)
    assert 4 * (fitted + memory.CONTEXT_STEP) * SMOLLM2_PER_TOKEN > memory.KV_SHARE * (1 << 30)
    assert "context lowered to" in caplog.text and "FOUNDRY_CHAT_MAX_CONTEXT" in caplog.text


def test_a_cache_that_fits_or_no_limit_changes_nothing():
    assert memory.fit_context(2048, 4, SMOLLM2_PER_TOKEN, limit=4 << 30) == 2048
    assert memory.fit_context(8192, 4, SMOLLM2_PER_TOKEN, limit=0) == 8192


def test_the_limit_is_read_from_cgroup_v2_or_v1_and_unlimited_means_none(tmp_path):
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("1073741824\n")
    assert memory.memory_limit_bytes([str(v2), str(v1)]) == 1 << 30
    v2.write_text("max\n")
    assert memory.memory_limit_bytes([str(v2), str(v1)]) is None
    v2.unlink()
    v1.write_text("9223372036854771712\n")           # cgroup v1's "no limit"
    assert memory.memory_limit_bytes([str(v2), str(v1)]) is None
    v1.write_text("536870912\n")
    assert memory.memory_limit_bytes([str(v2), str(v1)]) == 512 << 20
    assert memory.memory_limit_bytes([str(tmp_path / "missing")]) is None
