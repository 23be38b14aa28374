"""Liveness and readiness: public, and the only routes that answer without credentials."""

from foundry_inference.store import errors

from .handler import ControlPlaneHandler


class HealthzHandler(ControlPlaneHandler):
    public = True

    def get(self):
        self.write_json({"status": "healthy"})


class ReadyzHandler(ControlPlaneHandler):
    public = True

    async def get(self):
        try:
            await self.settings["store"].ping()
        except errors.StoreError as exc:
            self.write_json({"status": "not ready", "kubernetes": "disconnected", "error": exc.message}, 503)
            return
        self.write_json({"status": "ready", "kubernetes": "connected"})


routes = [(r"/healthz", HealthzHandler), (r"/readyz", ReadyzHandler)]
