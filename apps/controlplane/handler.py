"""The control plane's base handler: auth (deny by default), the contract envelope, parameter checks."""
import asyncio
import re

from foundry_inference import ssrf
from foundry_inference.apps.base import ApiError, BaseHandler, control_plane_envelope, validation_error
from foundry_inference.auth.tornado import AuthMixin

from . import errors, validation

_DNS_LABEL = re.compile(validation.DNS_LABEL)
_DNS_SUBDOMAIN = re.compile(validation.DNS_SUBDOMAIN)


class ControlPlaneHandler(AuthMixin, BaseHandler):
    envelope = staticmethod(control_plane_envelope)
    plane = "control"

    def initialize(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def store(self):
        return self.settings["store"]

    @property
    def config(self):
        return self.settings["config"]

    @property
    def max_body_bytes(self):
        return self.config.max_body_bytes

    def translate(self, exc):
        return errors.translate(exc)

    def load_body(self, schema):
        return validation.load(schema, self.json_body())

    # --- parameters -------------------------------------------------------------------------------------------
    def check_name(self, name, field="name", subdomain=False):
        pattern, limit = (_DNS_SUBDOMAIN, 253) if subdomain else (_DNS_LABEL, 63)
        if not name or len(name) > limit or not pattern.match(name):
            raise validation_error([{"field": field, "message": f"{name[:80]!r} is not a valid lowercase RFC 1123 "
                                                                f"name (at most {limit} characters)"}])
        return name

    def check_namespace(self, namespace, for_write=False):
        self.check_name(namespace, "namespace")
        watched = self.config.watch_namespaces
        if for_write and watched is not None and namespace not in watched:
            raise validation_error([{"field": "namespace", "message": f"namespace {namespace!r} is not watched by "
                                                                     f"the operator (watched: {', '.join(watched)})"}])
        return namespace

    def query_int(self, name, default=None, low=None, high=None, clamp=False):
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            raise validation_error([{"field": name, "message": "must be an integer"}]) from None
        if clamp:
            return max(low, min(high, value))
        if (low is not None and value < low) or (high is not None and value > high):
            raise validation_error([{"field": name, "message": f"must be between {low} and {high}"}])
        return value

    def query_str(self, name, max_length=256):
        value = self.get_query_argument(name, None)
        if value is not None and len(value) > max_length:
            raise validation_error([{"field": name, "message": f"must be at most {max_length} characters"}])
        return value or None

    async def check_registry(self, registry, field):
        """SSRF guard; DNS resolution runs off the IOLoop."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, ssrf.check_registry, registry, self.config.registry_allowlist)
        except ssrf.SsrfError as exc:
            raise validation_error([{"field": field, "message": f"registry rejected: {exc}"}]) from None

    def not_found(self, message):
        return ApiError(404, "NotFound", message)
