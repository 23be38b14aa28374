"""ResourceStore on a real Kubernetes apiserver through the `kubernetes` client.

Raw REST paths through ApiClient.call_api keep custom and built-in kinds on one code path and hand back plain dicts
(no model classes to convert). Every client exception is wrapped once here into the store's own errors.
"""
import copy
import json
import logging
import re
import socket

import kubernetes.client
import kubernetes.config
import urllib3

from . import errors
from .base import ListResult, ResourceStore
from .kinds import kind_of

log = logging.getLogger("foundry_inference.store.kube")

_MERGE = "application/merge-patch+json"


def load_configuration(kubeconfig=None, context=None):
    """In-cluster config when running in a pod (and no kubeconfig given), else the kubeconfig file."""
    cfg = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
            return cfg
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return cfg


_PATH_IN_MESSAGE = re.compile(r'"((?:spec|status|metadata)(?:\.[A-Za-z0-9_\[\]-]+)*)"')


def _causes(status):
    """The apiserver's causes; 1.20 reports oneOf failures with field "<nil>" and the path inside the message."""
    causes = []
    for cause in (status.get("details") or {}).get("causes") or []:
        cause = dict(cause)
        if cause.get("field") in (None, "", "<nil>"):
            match = _PATH_IN_MESSAGE.search(cause.get("message") or "")
            cause["field"] = match.group(1) if match else None
        causes.append(cause)
    return causes


def _wrap(exc):
    if isinstance(exc, kubernetes.client.ApiException):
        try:
            status = json.loads(exc.body or "{}")
        except ValueError:
            status = {}
        message = status.get("message") or exc.reason or f"HTTP {exc.status}"
        causes = _causes(status)
        reason = status.get("reason")
        if exc.status == 404:
            return errors.NotFound(message)
        if exc.status == 409:
            return (errors.AlreadyExists if reason == "AlreadyExists" else errors.Conflict)(message)
        if exc.status == 422:
            return errors.Invalid(message, causes)
        if exc.status == 400:
            field = "continue" if "continue" in message else None
            return errors.Invalid(message, causes or ([{"field": field, "reason": "FieldValueInvalid",
                                                        "message": message}] if field else []))
        if exc.status == 410:
            return errors.Gone(message)
        if exc.status in (401, 403):
            return errors.Forbidden(message)
        return errors.Unavailable(message)
    return errors.Unavailable(f"apiserver unreachable: {exc.__class__.__name__}: {exc}")


def _clean(obj):
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


class KubernetesStore(ResourceStore):
    runs_pods = True

    def __init__(self, kubeconfig=None, context=None, configuration=None, timeout=(3, 30), pool_size=16):
        cfg = configuration or load_configuration(kubeconfig, context)
        cfg.retries = urllib3.Retry(total=1, connect=1, read=0, backoff_factor=0.2)
        cfg.connection_pool_maxsize = pool_size
        self.configuration = cfg
        self.api = kubernetes.client.ApiClient(cfg)
        self.timeout = timeout

    def dedicated(self, pool_size):
        """Another store on the same configuration with its own connection pool, e.g. for long-lived watches that
        would otherwise hold the connections ordinary requests need."""
        return KubernetesStore(configuration=copy.deepcopy(self.configuration), timeout=self.timeout,
                               pool_size=pool_size)

    def _request(self, method, path, query=None, body=None, content_type="application/json",
                 accept="application/json"):
        """One HTTP call; returns (status, raw body). Transport failures become Unavailable."""
        try:
            method, url, headers, body, post = self.api.param_serialize(
                method, path, query_params=list((query or {}).items()),
                header_params={"Accept": accept, "Content-Type": content_type},
                body=body, auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, header_params=headers, body=body, post_params=post,
                                     _request_timeout=self.timeout)
            return resp.status, resp.read()
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _wrap(exc) from None

    @staticmethod
    def _check(status, data):
        if not 200 <= status <= 299:
            exc = kubernetes.client.ApiException(status=status, reason=f"HTTP {status}")
            exc.body = data.decode(errors="replace") if data else ""
            raise _wrap(exc)

    def _call(self, method, path, query=None, body=None, content_type="application/json"):
        status, data = self._request(method, path, query, body, content_type)
        self._check(status, data)
        try:
            return json.loads(data or b"{}")
        except ValueError:
            raise errors.Unavailable(f"apiserver answered {method} {path} with a body that is not JSON") from None

    def get(self, kind, namespace, name):
        return _clean(self._call("GET", kind_of(kind).path(namespace, name)))

    def list(self, kind, namespace=None, label_selector=None, limit=None, continue_token=None):
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if limit:
            query["limit"] = int(limit)
        if continue_token:
            query["continue"] = continue_token
        k = kind_of(kind)
        body = self._call("GET", k.path(namespace), query)
        items = []
        for item in body.get("items") or []:
            item.setdefault("apiVersion", k.api_version)
            item.setdefault("kind", k.kind)
            items.append(_clean(item))
        meta = body.get("metadata") or {}
        return ListResult(items, meta.get("continue") or None, meta.get("resourceVersion"),
                          meta.get("remainingItemCount"))

    def create(self, obj):
        k = kind_of(obj)
        namespace = obj.get("metadata", {}).get("namespace")
        return _clean(self._call("POST", k.path(namespace), body=obj))

    def replace(self, obj):
        k = kind_of(obj)
        meta = obj.get("metadata", {})
        if not meta.get("resourceVersion"):
            raise errors.Invalid("replace needs metadata.resourceVersion",
                                 [{"field": "metadata.resourceVersion", "reason": "FieldValueRequired",
                                   "message": "required for optimistic concurrency"}])
        return _clean(self._call("PUT", k.path(meta.get("namespace"), meta.get("name")), body=obj))

    def patch(self, kind, namespace, name, patch):
        patch = {key: value for key, value in patch.items() if key != "status"}
        return _clean(self._call("PATCH", kind_of(kind).path(namespace, name), body=patch, content_type=_MERGE))

    def patch_status(self, kind, namespace, name, status_patch):
        k = kind_of(kind)
        path = k.path(namespace, name, "status" if k.status_subresource else None)
        return _clean(self._call("PATCH", path, body={"status": status_patch}, content_type=_MERGE))

    def get_scale(self, kind, namespace, name):
        return self._call("GET", kind_of(kind).path(namespace, name, "scale"))

    def patch_scale(self, kind, namespace, name, replicas, resource_version=None):
        body = {"spec": {"replicas": int(replicas)}}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._call("PATCH", kind_of(kind).path(namespace, name, "scale"), body=body, content_type=_MERGE)

    def delete(self, kind, namespace, name):
        self._call("DELETE", kind_of(kind).path(namespace, name), body={"propagationPolicy": "Background"})

    def pod_log(self, namespace, name, container, tail_lines=20, limit_bytes=16384):
        """The tail of one container's log (the apiserver asks the pod's kubelet)."""
        status, data = self._request("GET", kind_of("Pod").path(namespace, name, "log"),
                                     {"container": container, "tailLines": int(tail_lines),
                                      "limitBytes": int(limit_bytes)}, accept="*/*")
        self._check(status, data)
        return data.decode(errors="replace")

    def watch(self, kind, namespace=None, resource_version=None, timeout_s=60, label_selector=None):
        """Open a watch on a collection from `resource_version`; returns a WatchStream of (type, object) events.
        The apiserver ends it after `timeout_s`; an expired resourceVersion raises Gone (list again)."""
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": int(timeout_s)}
        if resource_version:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = label_selector
        try:
            method, url, headers, _body, _post = self.api.param_serialize(
                "GET", kind_of(kind).path(namespace), query_params=list(query.items()),
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, header_params=headers,
                                     _request_timeout=(self.timeout[0], timeout_s + 15))
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _wrap(exc) from None
        if resp.status != 200:
            exc = kubernetes.client.ApiException(status=resp.status, reason=f"HTTP {resp.status}")
            exc.body = resp.read().decode(errors="replace")
            raise _wrap(exc)
        return WatchStream(resp.response)

    def ping(self):
        status, data = self._request("GET", "/readyz")
        if status != 200:
            raise errors.Unavailable(f"apiserver not ready (HTTP {status}): {data[:200].decode(errors='replace')}")
        return data.decode(errors="replace").strip() or "ok"

    def close(self):
        self.api.close()


class WatchStream:
    """The events of one open watch, one JSON object per line. `close()` may be called from another thread: it shuts
    the socket down, so a reader blocked on it returns at once."""

    def __init__(self, response):
        self.response = response
        self.closed = False

    def __iter__(self):
        buffer = b""
        try:
            for chunk in self.response.stream(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._event(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as exc:
            if self.closed:             # closed by another thread mid-read (http.client drops its file: AttributeError)
                return
            if isinstance(exc, AttributeError):
                raise
            raise _wrap(exc) from None
        finally:
            self.response.release_conn()

    @staticmethod
    def _event(line):
        event = json.loads(line)
        obj = event.get("object") or {}
        if event.get("type") == "ERROR":
            exc = kubernetes.client.ApiException(status=obj.get("code") or 500, reason=obj.get("reason"))
            exc.body = json.dumps(obj)
            raise _wrap(exc)
        return event.get("type"), _clean(obj)

    def close(self):
        self.closed = True
        sock = getattr(getattr(self.response, "connection", None), "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.response.close()
