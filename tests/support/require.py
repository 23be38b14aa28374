"""One rule for tests that need something outside Python's standard library: a tool, a package, a model, a cluster.

Outside CI a missing prerequisite skips the test with the reason (a developer without nginx can still run the rest).
Under CI (CI=true, as `.ci/run` is run) or with FOUNDRY_REQUIRE_ALL=1 a missing prerequisite FAILS the test: a
suite must never turn green by skipping what it was meant to prove. The older per-topic switches
(FOUNDRY_REQUIRE_KUBE, FOUNDRY_REQUIRE_MODELS) still force the failure for their topic.
"""
import importlib
import os
import shutil

import pytest


def strict(topic=None):
    """True when a missing prerequisite must fail rather than skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("FOUNDRY_REQUIRE_ALL") == "1":
        return True
    return bool(topic) and os.environ.get(f"FOUNDRY_REQUIRE_{topic.upper()}") == "1"


def unavailable(reason, topic=None):
    """Skip (developer machine) or fail (CI) the calling test because `reason` is missing."""
    if strict(topic):
        pytest.fail(f"required for this test but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name, install_hint=None, topic=None):
    """The path of executable `name`, or unavailable()."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if path is None:
        unavailable(f"{name} is not installed" + (f" ({install_hint})" if install_hint else ""), topic)
    return path


def require_module(name, install_hint=None, topic=None):
    """The imported module `name`, or unavailable(). A project module that fails to import is always a failure."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if name.startswith(("foundry_inference", "tests.")):
            pytest.fail(f"the project's own module {name} does not import: {exc}", pytrace=False)
        unavailable(f"Python package {name} is not installed" + (f" ({install_hint})" if install_hint else "")
                    + f": {exc}", topic)
