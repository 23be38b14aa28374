"""`foundry-inference registry-secret` against a real embedded store: what it stores, and a clear exit 2 (never a
traceback, never the password echoed) for every bad input."""
import base64
import subprocess

import pytest

from foundry_inference.store.embedded import EmbeddedStore
from tests.support.procs import CLI

pytestmark = pytest.mark.unit


def cli(data_dir, *args, stdin=None, env=None):
    return subprocess.run([CLI, "registry-secret", *args, "--data-dir", str(data_dir)], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)


def stored(data_dir, name, ns="foundry-local-operator"):
    store = EmbeddedStore.with_chart_crds(data_dir / "store.db")
    try:
        return store.get("Secret", ns, name)
    finally:
        store.close()


def test_create_then_update_then_delete(tmp_path):
    done = cli(tmp_path, "creds", "-u", "puller", "--password-stdin", stdin="pa ss:word\n")
    assert done.returncode == 0, done.stderr
    assert "created Secret foundry-local-operator/creds" in done.stdout and "pa ss:word" not in done.stdout
    secret = stored(tmp_path, "creds")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == \
        {"username": "puller", "password": "pa ss:word"}
    done = cli(tmp_path, "creds", "-u", "other", "--password-stdin", stdin="second\n")
    assert done.returncode == 0 and "updated" in done.stdout
    assert base64.b64decode(stored(tmp_path, "creds")["data"]["password"]).decode() == "second"
    done = cli(tmp_path, "creds", "-n", "team-a", "-u", "u", env={"FOUNDRY_REGISTRY_PASSWORD": "from-env",
                                                                    "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert base64.b64decode(stored(tmp_path, "creds", "team-a")["data"]["password"]).decode() == "from-env"
    assert cli(tmp_path, "creds", "--delete").returncode == 0
    done = cli(tmp_path, "creds", "--delete")
    assert done.returncode == 2 and "no Secret foundry-local-operator/creds" in done.stderr


@pytest.mark.parametrize("args, stdin, message", [
    (["Bad_Name", "-u", "u", "--password-stdin"], "p\n", "not a valid Secret name"),
    (["creds", "-n", "../etc", "-u", "u", "--password-stdin"], "p\n", "not a valid namespace"),
    (["creds", "--password-stdin"], "p\n", "--username is required"),
    (["creds", "-u", "a:b", "--password-stdin"], "p\n", "may not contain"),
    (["creds", "-u", "u", "--password-stdin"], "\n", "the password is empty"),
    (["creds", "-u", "u"], "", "no password"),
])
def test_bad_input_is_a_clear_configuration_error(tmp_path, args, stdin, message):
    done = cli(tmp_path, *args, stdin=stdin, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
