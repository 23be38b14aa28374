"""The setting most embedded-mode tests start from: the model fetcher allowed to pull from a plain-http test
registry on loopback, and an embedded store (with the chart's CRDs) under the test's own data directory."""
from foundry_inference.store.embedded import EmbeddedStore


def loopback_embedded(tmp_path, monkeypatch):
    """(data directory, store) for `run_embedded`; the registry allowances last for the test only."""
    monkeypatch.setenv("FOUNDRY_FETCH_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("FOUNDRY_FETCH_INSECURE", "1")
    data = tmp_path / "data"
    return data, EmbeddedStore.with_chart_crds(data / "store.db")
