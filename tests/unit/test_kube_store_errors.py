"""The Kubernetes store wraps client failures into the store's own errors (no apiserver needed for these)."""
import socket

import kubernetes
import pytest

from foundry_inference.store import errors
from foundry_inference.store.kube import KubernetesStore, _wrap

pytestmark = pytest.mark.unit


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_apiserver_is_unavailable():
    cfg = kubernetes.client.Configuration()
    cfg.host = f"https://127.0.0.1:{_closed_port()}"
    cfg.verify_ssl = False
    store = KubernetesStore(configuration=cfg, timeout=(0.5, 1))
    with pytest.raises(errors.Unavailable):
        store.get("ModelDeployment", "default", "x")
    with pytest.raises(errors.Unavailable):
        store.ping()


@pytest.mark.parametrize("status, body, expected", [
    (404, '{"reason":"NotFound","message":"nope"}', errors.NotFound),
    (409, '{"reason":"AlreadyExists","message":"exists"}', errors.AlreadyExists),
    (409, '{"reason":"Conflict","message":"stale"}', errors.Conflict),
    (422, '{"reason":"Invalid","message":"bad","details":{"causes":[{"field":"spec.replicas"}]}}', errors.Invalid),
    (410, '{"reason":"Expired","message":"too old"}', errors.Gone),
    (400, '{"reason":"BadRequest","message":"continue key is not valid"}', errors.Invalid),
    (403, '{"reason":"Forbidden","message":"no"}', errors.Forbidden),
    (500, "not json", errors.Unavailable),
])
def test_api_exceptions_map_to_store_errors(status, body, expected):
    exc = kubernetes.client.ApiException(status=status, reason="x")
    exc.body = body
    wrapped = _wrap(exc)
    assert type(wrapped) is expected
    if status == 422:
        assert wrapped.causes == [{"field": "spec.replicas"}]
    if status == 400:
        assert wrapped.causes[0]["field"] == "continue"
