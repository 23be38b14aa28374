"""Fixtures for the auth unit tests: a real loopback OIDC issuer, key directories, a manual clock."""
import pytest

from tests.support.oidc_issuer import OidcIssuer


class ManualClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def issuer():
    with OidcIssuer() as iss:
        yield iss


@pytest.fixture
def key_dir(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    (d / "primary-key").write_text("a" * 64 + "\n")
    (d / "secondary-key").write_text("b" * 64)
    return d

