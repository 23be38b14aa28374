"""Entry points of the operator.

- `main(args)`: `foundry-inference operator` (args.store "kubernetes" | "embedded", args.data_dir, args.kubeconfig).
  On a cluster it runs the polling loop, and the autoscaler (autoscale/cluster.py) in a thread beside it, until
  SIGTERM/SIGINT. With `--store embedded` it runs `run_embedded`.
- `run_embedded(store, data_dir, stop_event, settings=None)`: for `foundry-inference up`. Thread-based and blocking:
  it runs the operator loop (every namespace, docs/api.md decision 6) in one thread and the embedded node agent (local
  processes for the Deployments, real nginx TLS sidecars, CA at <data-dir>/tls/ca.crt) in another, returns once
  `stop_event` (a threading.Event) is set, and before returning stops every child process it started. Call it from
  a thread of your own when the caller has its own loop (e.g. the control plane's asyncio loop in the main thread).

Settings come from the file named by FOUNDRY_OPERATOR_CONFIG (docs/operator.md); a bad file exits with status 2 and
a message naming the setting. On a cluster the probes of health.py listen on FOUNDRY_OPERATOR_HEALTH_PORT.
"""
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from foundry_inference import logs
from foundry_inference.envreader import EnvReader
from foundry_inference.store.factory import default_data_dir, open_store

from . import health
from . import settings as settings_mod
from .autoscale import cluster as cluster_autoscaler
from .loop import Operator

log = logging.getLogger("foundry_inference.operator")


def run_embedded(store, data_dir, stop_event, settings=None, started=None):
    """Run operator + node agent on the embedded store until `stop_event` is set; no child process outlives it.

    Before either loop starts, the statuses an earlier life left behind are voided (the agent's Deployments have no
    ready replica yet) and one operator pass carries that to every ModelDeployment; then `started` (a
    threading.Event) is set, so a control plane that waits for it never shows a stale Running."""
    from .agent.agent import NodeAgent

    settings = (settings or settings_mod.load()).for_embedded()
    data_dir = Path(data_dir)
    operator = Operator(store, settings)
    agent = NodeAgent(store, data_dir, settings)
    try:
        agent.begin_life()
        operator.run_pass()
    except Exception:  # noqa: BLE001 - the loops retry whatever failed here; starting must not depend on it
        log.exception("could not void the statuses of the previous run")
    if started is not None:
        started.set()
    threads = [threading.Thread(target=operator.run, args=(stop_event,), name="operator", daemon=True),
               threading.Thread(target=agent.run, args=(stop_event,), name="node-agent", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        while not stop_event.is_set():
            stop_event.wait(1.0)
            for thread in threads:
                if not thread.is_alive() and not stop_event.is_set():
                    log.error("%s thread died; stopping embedded mode", thread.name)
                    stop_event.set()
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(timeout=60)
        agent.shutdown()       # idempotent: every process it started is gone when this returns
        operator.close()


def _stop_on_signals(stop_event):
    def handler(signum, _frame):
        logs.event(log, "stopping", signal=signal.Signals(signum).name)
        stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _probes(operator):
    """/healthz and /readyz for the kubelet (health.py) on FOUNDRY_OPERATOR_HEALTH_PORT (default 8081, 0: off)."""
    port = EnvReader(os.environ, settings_mod.SettingsError).integer(
        "FOUNDRY_OPERATOR_HEALTH_PORT", health.DEFAULT_PORT, low=0, high=65535)
    if not port:
        return None
    try:
        return health.HealthServer(operator, port).start()
    except OSError as exc:
        raise settings_mod.SettingsError(f"FOUNDRY_OPERATOR_HEALTH_PORT: cannot listen on {port}: {exc.strerror}") \
            from None


def main(args):
    try:
        settings = settings_mod.load()
    except settings_mod.SettingsError as exc:
        print(f"foundry-inference operator: invalid settings: {exc}", file=sys.stderr)
        return 2
    backend = getattr(args, "store", "kubernetes") or "kubernetes"
    data_dir = Path(getattr(args, "data_dir", None) or default_data_dir())
    store = open_store(backend, data_dir=data_dir, kubeconfig=getattr(args, "kubeconfig", None))
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        if backend == "embedded":
            run_embedded(store, data_dir, stop, settings)
        else:
            operator = Operator(store, settings)
            probes = _probes(operator)
            scaler = cluster_autoscaler.start(store, settings, stop)
            try:
                operator.run(stop)
            finally:
                stop.set()
                scaler.join(10)
                if probes:
                    probes.stop()
                operator.close()
    finally:
        store.close()
    return 0
