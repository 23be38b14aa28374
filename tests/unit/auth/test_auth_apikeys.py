"""API keys from files: both keys, rotation without restart (within 5 s), disabled keys, constant-time compare."""
import hmac
import logging
import os
import time

import pytest

from foundry_inference.auth import apikeys
from foundry_inference.auth.apikeys import ApiKeyAuthenticator, fingerprint
from foundry_inference.auth.errors import InvalidApiKey
from foundry_inference.auth.principal import ADMIN_KEY, DEPLOYMENT_KEY

pytestmark = pytest.mark.unit

A, B = "a" * 64, "b" * 64


def make(key_dir, clock=time.monotonic, **kw):
    return ApiKeyAuthenticator.from_paths(keys_dir=str(key_dir), deployment="phi4", clock=clock, **kw)


def test_both_keys_work_and_name_the_key_not_its_value(key_dir):
    auth = make(key_dir)
    p1, p2 = auth.authenticate(A), auth.authenticate(B)
    assert (p1.identity, p1.kind) == ("apikey:phi4:primary", DEPLOYMENT_KEY)
    assert (p2.identity, p2.kind) == ("apikey:phi4:secondary", DEPLOYMENT_KEY)
    assert A not in repr(p1)


@pytest.mark.parametrize("wrong", ["c" * 64, A[:-1], A + "a", "", " ", A.upper()])
def test_wrong_keys_are_rejected(key_dir, wrong):
    with pytest.raises(InvalidApiKey) as err:
        make(key_dir).authenticate(wrong)
    assert err.value.status == 401 and err.value.code == "invalid_api_key"


def test_rotation_is_seen_after_the_reload_interval_while_the_other_key_keeps_working(key_dir, clock):
    auth = make(key_dir, clock=clock, reload_s=5.0)   # the longest interval the settings allow
    assert auth.authenticate(A)
    (key_dir / "primary-key").write_text("n" * 64)
    clock.advance(4.9)
    assert auth.authenticate(A)                       # cached for at most the interval
    assert auth.authenticate(B)
    clock.advance(0.2)                                # past 5 s: re-read
    with pytest.raises(InvalidApiKey):
        auth.authenticate(A)
    assert auth.authenticate("n" * 64).identity == "apikey:phi4:primary"
    assert auth.authenticate(B).identity == "apikey:phi4:secondary"


def test_a_just_rotated_key_works_at_once(key_dir, clock):
    """A client that uses the key the rotate call answered must not get 401 for a reload period: a key nobody knows
    makes the files be read again at once (the replaced key is then refused too, sooner than the 5 s bound)."""
    auth = make(key_dir, clock=clock, reload_s=5.0)
    assert auth.authenticate(A)
    (key_dir / "primary-key").write_text("n" * 64)
    clock.advance(0.2)
    assert auth.authenticate("n" * 64).identity == "apikey:phi4:primary"
    assert auth.authenticate(B).identity == "apikey:phi4:secondary"
    with pytest.raises(InvalidApiKey):
        auth.authenticate(A)


def test_a_flood_of_unknown_keys_rereads_the_files_at_most_ten_times_a_second(key_dir, clock, monkeypatch):
    auth = make(key_dir, clock=clock)
    reads = []
    original = apikeys.KeyFile._reload
    monkeypatch.setattr(apikeys.KeyFile, "_reload", lambda self: (reads.append(self.name), original(self)))
    for _ in range(1000):
        with pytest.raises(InvalidApiKey):
            auth.authenticate("c" * 64)
    assert len(reads) == 2                           # the first look: one read of each file
    clock.advance(apikeys.UNKNOWN_KEY_RELOAD_S)
    for _ in range(1000):
        with pytest.raises(InvalidApiKey):
            auth.authenticate("c" * 64)
    assert len(reads) == 4


def test_rotation_takes_effect_within_5_seconds_of_wall_clock_time(key_dir):
    """The real bound (docs/api.md, decision 9), with the real clock and a Kubernetes-style atomic symlink swap."""
    data1 = key_dir / "..2026_01"
    data1.mkdir()
    for name in ("primary-key", "secondary-key"):
        (key_dir / name).unlink()
    (data1 / "primary-key").write_text(A)
    (data1 / "secondary-key").write_text(B)
    os.symlink("..2026_01", key_dir / "..data")
    for name in ("primary-key", "secondary-key"):
        os.symlink(f"..data/{name}", key_dir / name)

    auth = make(key_dir)                              # default reload interval (2 s), under the 5 s bound
    assert auth.authenticate(A)
    data2 = key_dir / "..2026_02"
    data2.mkdir()
    (data2 / "primary-key").write_text("r" * 64)
    (data2 / "secondary-key").write_text(B)
    os.symlink("..2026_02", key_dir / "..data_tmp")
    os.replace(key_dir / "..data_tmp", key_dir / "..data")
    rotated_at = time.monotonic()
    while True:
        assert auth.authenticate(B)                   # the other key never stops working
        try:
            auth.authenticate("r" * 64)
            break
        except InvalidApiKey:
            assert time.monotonic() - rotated_at < 5.0, "rotated key not accepted within 5 s"
            time.sleep(0.05)
    assert time.monotonic() - rotated_at < 5.0
    with pytest.raises(InvalidApiKey):
        auth.authenticate(A)


@pytest.mark.parametrize("content", ["", "\n", "   \n\t"])
def test_empty_key_file_disables_that_key_and_never_matches_empty(key_dir, content):
    (key_dir / "primary-key").write_text(content)
    auth = make(key_dir)
    for presented in ("", " ", content):
        with pytest.raises(InvalidApiKey):
            auth.authenticate(presented)
    assert auth.authenticate(B)


def test_missing_files_disable_keys_and_appear_later(key_dir, clock):
    (key_dir / "primary-key").unlink()
    (key_dir / "secondary-key").unlink()
    auth = make(key_dir, clock=clock)
    with pytest.raises(InvalidApiKey):
        auth.authenticate(A)
    (key_dir / "secondary-key").write_text(B)
    clock.advance(5)
    assert auth.authenticate(B)


def test_missing_directory_is_not_a_crash(tmp_path):
    auth = make(tmp_path / "nope")
    with pytest.raises(InvalidApiKey):
        auth.authenticate(A)


def test_admin_key(tmp_path):
    admin = tmp_path / "admin-key"
    admin.write_text("adm" * 20)
    auth = ApiKeyAuthenticator.from_paths(admin_key_file=str(admin))
    p = auth.authenticate("adm" * 20)
    assert (p.kind, p.identity) == (ADMIN_KEY, "apikey:admin")


def test_comparison_goes_through_hmac_compare_digest(key_dir, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    auth = make(key_dir)
    auth.authenticate(B)
    # every configured key is compared (no early exit), always as fixed-length SHA-256 digests
    assert calls == [(32, 32), (32, 32)]
    calls.clear()
    with pytest.raises(InvalidApiKey):
        auth.authenticate("short")
    # an unknown key is looked up twice (the second time after re-reading the files, for a just-rotated key)
    assert calls == [(32, 32)] * 4


def test_logs_carry_fingerprints_never_keys(key_dir, clock, caplog):
    caplog.set_level(logging.DEBUG, logger="foundry_inference.auth")
    auth = make(key_dir, clock=clock)
    auth.authenticate(A)
    with pytest.raises(InvalidApiKey):
        auth.authenticate("z" * 64)
    (key_dir / "primary-key").write_text("")
    clock.advance(5)
    auth.authenticate(B)
    text = caplog.text
    assert A not in text and B not in text and "z" * 64 not in text
    assert fingerprint(A) in text and fingerprint(B) in text
    assert "primary-key disabled" in text


def test_key_file_longer_than_limit_is_disabled(key_dir):
    (key_dir / "primary-key").write_text("k" * (apikeys.MAX_KEY_BYTES + 1))
    with pytest.raises(InvalidApiKey):
        make(key_dir).authenticate("k" * (apikeys.MAX_KEY_BYTES + 1))
