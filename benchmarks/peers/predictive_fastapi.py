"""A minimal FastAPI + uvicorn predictive server (the reference product's stack) around the same onnxruntime
session: pydantic request model, `async def` endpoint running session.run inline (for models this small the
fastest FastAPI variant: a `def` endpoint would add a thread-pool hop per request), uvicorn with uvloop + httptools,
no access log.

    python benchmarks/peers/predictive_fastapi.py MODEL.onnx PORT
"""
import sys

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from predictive_common import OnnxPredictor  # noqa: E402


class Item(BaseModel):
    content_type: str = "application/json"
    encoder: str = "base64"
    data: str


class PredictRequest(BaseModel):
    items: list[Item]


def build(path):
    predictor = OnnxPredictor(path)
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(request: PredictRequest):
        try:
            array = predictor.decode([i.model_dump() for i in request.items])
        except (ValueError, KeyError) as exc:
            raise HTTPException(400, str(exc)) from None
        outputs, ms = predictor.run(array)
        return predictor.response(array, outputs, ms)

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False, loop="uvloop", http="httptools", backlog=2048)
