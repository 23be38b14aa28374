"""`foundry-inference up`: the platform on one machine, over the embedded store.

Today this runs the control plane on the embedded store; the operator and the embedded node agent join it as their
issues land (docs/embedded-mode.md).
"""
import asyncio
import logging
from pathlib import Path

from foundry_inference import logs
from foundry_inference.apps.controlplane.app import serve
from foundry_inference.store.factory import default_data_dir, open_store

log = logging.getLogger("foundry_inference.up")


def main(args):
    data_dir = Path(args.data_dir or default_data_dir())
    store = open_store("embedded", data_dir=data_dir)
    logs.event(log, "embedded mode starting", data_dir=str(data_dir),
               api=f"http://{args.address}:{args.port}/api/v1", health=f"http://{args.address}:{args.port}/healthz")
    asyncio.run(serve(store, port=args.port, address=args.address))
    return 0
