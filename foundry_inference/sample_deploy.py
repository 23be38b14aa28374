"""`foundry-inference up --deploy-sample iris-classifier`: deploy the predictive sample once and prove it answers.

Used by the README's first command, so that a fresh machine ends with a model deployed and answering: the
deployment `default/<alias>` is created through the store if it does not exist (a restart reuses it, with its keys),
and once it is Running one `/v1/predict` call goes through its nginx TLS sidecar, the certificate checked against
`<data-dir>/tls/ca.crt`, with its primary key. The outcome, and how to call the model yourself, is logged.
"""
import base64
import json
import logging
import ssl
import time
import urllib.request

from foundry_inference import logs
from foundry_inference.store import errors

log = logging.getLogger("foundry_inference.up")
NAMESPACE = "default"
SAMPLE_INPUTS = {"iris-classifier": [[5.1, 3.5, 1.4, 0.2]]}  # one setosa flower: sepal/petal length and width (cm)


def _predict(endpoint, key, rows, cafile):
    data = base64.b64encode(json.dumps(rows).encode()).decode()
    body = json.dumps({"items": [{"content_type": "application/json", "encoder": "base64", "data": data}]}).encode()
    request = urllib.request.Request(f"{endpoint}/v1/predict", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=cafile)) as resp:
        answer = json.loads(resp.read())
    return json.loads(base64.b64decode(answer["items"][0]["data"]))


def deploy_and_check(store, data_dir, alias, stop_event, timeout=900):
    if alias not in SAMPLE_INPUTS:
        logs.event(log, "unknown sample to deploy", logging.ERROR, sample=alias, known=sorted(SAMPLE_INPUTS))
        return False
    try:
        store.get("ModelDeployment", NAMESPACE, alias)
    except errors.NotFound:
        store.create({"apiVersion": "foundrylocal.azure.com/v1", "kind": "ModelDeployment",
                      "metadata": {"name": alias, "namespace": NAMESPACE},
                      "spec": {"model": {"catalog": {"name": alias}}, "compute": "cpu"}})
        logs.event(log, "sample deployment created", deployment=f"{NAMESPACE}/{alias}")
    deadline = time.monotonic() + timeout
    status = {}
    while not stop_event.wait(1.0):
        status = store.get("ModelDeployment", NAMESPACE, alias).get("status") or {}
        if status.get("state") == "Running" and status.get("internalEndpoint"):
            break
        if time.monotonic() > deadline:
            logs.event(log, "sample deployment not running", logging.ERROR, deployment=f"{NAMESPACE}/{alias}",
                       state=status.get("state"), message=status.get("message"))
            return False
    else:
        return False
    secret = store.get("Secret", NAMESPACE, f"{alias}-api-keys")
    key = base64.b64decode(secret["data"]["primary-key"]).decode()
    endpoint, cafile = status["internalEndpoint"], str(data_dir / "tls" / "ca.crt")
    for attempt in range(30):
        try:
            outputs = _predict(endpoint, key, SAMPLE_INPUTS[alias], cafile)
            break
        except OSError as exc:  # the sidecar may still be reloading its keys; retry briefly
            if attempt == 29 or stop_event.wait(1.0):
                logs.event(log, "sample deployment not answering", logging.ERROR, endpoint=endpoint, error=str(exc))
                return False
    logs.event(log, "sample deployed and answering", deployment=f"{NAMESPACE}/{alias}", endpoint=endpoint,
               input=SAMPLE_INPUTS[alias], output=outputs,
               keys=f"GET /api/v1/namespaces/{NAMESPACE}/deployments/{alias}/keys", ca=cafile)
    return True
