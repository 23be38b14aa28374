# ruff: noqa
# Verbatim copy of the team's reference rival (FastAPI + uvicorn doing our /v1/predict work): the rival our predictive server is measured
# against. Run by benchmarks/bench_predictive.py under the peer interpreter (uvicorn with uvloop + httptools).
"""FastAPI + uvicorn doing the seed's predictive protocol: the rival our predictive server must beat.

The seed's own predictive server is "Python / FastAPI" on port 8000, so this is its stack doing the same work as ours
per request: check the API key (constant time), decode items[0] (base64 of a JSON array), run every model output,
answer {"metadata", "items": [base64 of {"<output>_<index>": ...}]}.

  MODEL_PATH=models/iris_logreg.onnx API_KEY=k uvicorn fastapi_items_server:app --app-dir ../shared/bench --port 18005 --no-access-log
"""
import base64
import hmac
import json
import os
import time

import numpy as np
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

import onnxruntime as ort


def make_session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1      # pinned to one core; a 1-row request cannot use a pool
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


sess = make_session(os.environ["MODEL_PATH"])
INPUT = sess.get_inputs()[0].name
OUTPUTS = [o.name for o in sess.get_outputs()]
KEY = os.environ.get("API_KEY", "bench-key").encode()
app = FastAPI()


class Item(BaseModel):
    content_type: str = "application/json"
    encoder: str = "base64"
    data: str


class PredictRequest(BaseModel):
    items: list[Item]


@app.post("/v1/predict")
async def predict(req: PredictRequest, authorization: str = Header("")) -> dict:
    token = authorization[7:] if authorization.startswith("Bearer ") else ""
    if not hmac.compare_digest(token.encode(), KEY):
        raise HTTPException(status_code=401, detail="The API key is not valid")
    if len(req.items) != 1:
        raise HTTPException(status_code=400, detail="exactly one item")
    x = np.asarray(json.loads(base64.b64decode(req.items[0].data)), dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    t0 = time.perf_counter()
    outs = sess.run(OUTPUTS, {INPUT: x})
    ms = (time.perf_counter() - t0) * 1000
    result = {f"{name}_{i}": v.tolist() for i, (name, v) in enumerate(zip(OUTPUTS, outs))}
    data = base64.b64encode(json.dumps(result).encode()).decode()
    return {"metadata": {"model_id": "bench", "batch_size": int(x.shape[0]), "inference_time_ms": round(ms, 3)},
            "items": [{"content_type": "application/json", "encoder": "base64", "data": data}]}
