"""`foundry-inference up`: the platform on one machine, over the embedded store.

Runs the control plane (asyncio, main thread) and the operator + embedded node agent (their own threads) over one
embedded store, with a generated admin API key (`<data-dir>/admin-key`, mode 0600). Ctrl-C stops the control plane,
then the operator and the agent, which stop every model-server and nginx process they started; the state stays in
the data directory for the next start.

Samples (docs/api.md, decision 7): on start a background thread prepares the sample models (foundry_inference.samples:
iris-classifier, smollm2-135m-instruct, whisper-tiny-en, all-minilm-l6-v2) into the sample cache, logging progress; a
sample whose dependencies are missing is reported (and deploying it ends in state Error with that reason).
FOUNDRY_SAMPLES picks them (`all`, the default; `none`; or a comma list of names). Deployments of a sample that is
still being prepared simply wait for it (the fetcher prepares it itself, from the same cache).

Model cache: every model fetcher the node agent starts shares `<data-dir>/cache` (content-addressed OCI blobs,
resumable partial downloads), limited by `--model-cache-limit` or FOUNDRY_MODEL_CACHE_LIMIT (e.g. 20Gi, 500Mi); a
size that is not one is a configuration error (exit 2) before anything starts.
"""
import asyncio
import logging
import os
import secrets
import shutil
import threading
from pathlib import Path

from foundry_inference import logs
from foundry_inference.apps.controlplane.app import control_plane_auth, make_app, serve
from foundry_inference.apps.controlplane.settings import ControlPlaneSettings
from foundry_inference.config import ConfigurationError
from foundry_inference.store.factory import default_data_dir, open_store

log = logging.getLogger("foundry_inference.up")


def ensure_admin_key(data_dir):
    """The control plane's admin key: generated once, kept across restarts, readable by this user only."""
    path = Path(data_dir) / "admin-key"
    if not path.exists() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("fndry-admin-" + secrets.token_hex(24) + "\n")
    os.chmod(path, 0o600)
    return path


def _wanted_samples(env):
    from foundry_inference import samples
    raw = (env.get("FOUNDRY_SAMPLES") or "all").strip().lower()
    if raw in ("", "all"):
        return list(samples.NAMES)
    if raw in ("none", "0", "off", "false"):
        return []
    return [name.strip() for name in raw.split(",") if name.strip()]


def prepare_samples(names, stop=None):
    """Prepare each sample (cached by content: a restart only re-verifies digests), logging progress."""
    from foundry_inference import samples

    def progress(message):
        logs.event(log, "sample", progress=message)

    for name in names:
        if stop is not None and stop.is_set():
            return
        try:
            folder = samples.prepare(name, progress)
            logs.event(log, "sample ready", sample=name, folder=str(folder))
        except samples.SampleError as exc:
            logs.event(log, "sample unavailable", level=logging.WARNING, sample=name, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken sample must not stop the platform
            log.exception("preparing sample %s failed", name)
            logs.event(log, "sample unavailable", level=logging.WARNING, sample=name, reason=repr(exc))


def model_cache_limit(option, env):
    """`--model-cache-limit`, else FOUNDRY_MODEL_CACHE_LIMIT, as bytes (None: no limit); ConfigurationError when it is
    not a size."""
    from foundry_inference.operator.agent.agent import cache_limit
    if option is not None:
        return cache_limit(option, "--model-cache-limit")
    return cache_limit(env.get("FOUNDRY_MODEL_CACHE_LIMIT") or None)


def require_tls_sidecar(args):
    """nginx terminates TLS in front of every deployment; without it, deployments would be plain HTTP. That is never
    silent: `up` stops with a message unless --allow-plain-http says so (ConfigurationError -> exit 2)."""
    if shutil.which("nginx") or getattr(args, "allow_plain_http", False):
        return
    raise ConfigurationError("nginx is not installed (not found on PATH), so deployments would be served over plain "
                             "HTTP without the TLS sidecar. Install nginx (Debian/Ubuntu: apt-get install nginx), or "
                             "pass --allow-plain-http to accept plain HTTP on 127.0.0.1.")


def main(args):
    require_tls_sidecar(args)
    limit = model_cache_limit(getattr(args, "model_cache_limit", None), os.environ)
    if limit is not None:
        os.environ["FOUNDRY_MODEL_CACHE_LIMIT"] = str(limit)     # read by the node agent for every fetcher
    data_dir = Path(args.data_dir or default_data_dir())
    store = open_store("embedded", data_dir=data_dir)
    key_file = ensure_admin_key(data_dir)
    # the node agent writes a rotated key into the deployment's key files within its 1 s tick, and the servers
    # re-read them at once when a key they do not know is presented: every replica accepts it within 2 s
    config = ControlPlaneSettings.from_env({"FOUNDRY_KEY_PROPAGATION_S": "2", **os.environ,
                                            "FOUNDRY_WATCH_NAMESPACES": "*"})
    app = make_app(store, config, auth=control_plane_auth(mode="api-key", admin_key_file=str(key_file),
                                                          api_keys_dir=None))
    url = f"http://{args.address}:{args.port}"
    logs.event(log, "embedded mode starting", data_dir=str(data_dir), api=f"{url}/api/v1", docs=f"{url}/docs",
               admin_key_file=str(key_file), auth=f'Authorization: Bearer $(cat {key_file})',
               model_cache=str(data_dir / "cache"), model_cache_limit=limit or "none")
    # Model servers inherit this environment. Their key files are rewritten by the node agent within a tick (1 s) of
    # a rotation; re-reading them every 2 s keeps "a rotated key takes effect within 5 s" (docs/api.md, decision 9)
    # with room.
    os.environ.setdefault("FOUNDRY_API_KEYS_RELOAD_S", "2")
    from foundry_inference.operator import settings as operator_settings
    from foundry_inference.operator.main import run_embedded
    stop, started = threading.Event(), threading.Event()
    workers = threading.Thread(target=run_embedded, name="operator+agent",
                               args=(store, data_dir, stop, operator_settings.load(), started))
    workers.start()
    # the API answers only once the previous run's statuses are voided: no deployment says Running before this
    # run's model server and sidecar answer
    started.wait(120)
    names = _wanted_samples(os.environ)
    if names:
        threading.Thread(target=prepare_samples, args=(names, stop), name="samples", daemon=True).start()
    if getattr(args, "deploy_sample", None):
        from foundry_inference.sample_deploy import deploy_and_check
        threading.Thread(target=deploy_and_check, args=(store, data_dir, args.deploy_sample, stop),
                         name="sample-deploy", daemon=True).start()
    try:
        asyncio.run(serve(app, port=args.port, address=args.address))
    finally:
        stop.set()
        workers.join(60)
        logs.event(log, "embedded mode stopped", data_dir=str(data_dir))
    return 0
