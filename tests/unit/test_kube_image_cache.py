"""The test cluster's image cache (tests/kube/images.py) keeps one archive per image: each source change builds new
~300 MB archives, and the superseded ones are removed - except those another cluster of the machine used lately."""
import os
import time

import pytest

from tests.kube import images

pytestmark = pytest.mark.unit


def archive(cache, name, age_s=0, size=10):
    path = cache / name
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_superseded_archives_go_and_the_one_in_use_stays(tmp_path):
    hour = 3600
    in_use = [archive(tmp_path, "foundry-inference-1ac8a8d3a044653c.tar", age_s=5 * hour),        # reused: old
              archive(tmp_path, "foundry-inference-chat-03e4887328bd73a9.tar"),
              archive(tmp_path, "debian-base-8b40f9ebbad7.tar", age_s=30 * hour)]
    old = [archive(tmp_path, "foundry-inference-a3c24ea2e5c8e5a6.tar", age_s=3 * hour),
           archive(tmp_path, "foundry-inference-chat-95943359e20fe730.tar", age_s=2 * hour),
           archive(tmp_path, "foundry-inference-samples-3e98d1e4bd16cfcb.tar", age_s=2 * hour)]
    recent = archive(tmp_path, "foundry-inference-b7a011418eec7cbb.tar", age_s=20 * 60)   # another session's
    other = [archive(tmp_path, "unrelated-0123456789ab.tar", age_s=9 * hour),
             archive(tmp_path, "foundry-inference-notes.tar", age_s=9 * hour)]
    (tmp_path / "buildah").mkdir()
    removed = images.prune(tmp_path, in_use)
    assert sorted(removed) == sorted(old)
    assert all(p.exists() for p in [*in_use, recent, *other])
    assert all(time.time() - p.stat().st_mtime < 60 for p in in_use)          # touched: their last use is now
    assert images.prune(tmp_path, in_use) == []
