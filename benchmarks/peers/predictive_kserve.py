"""KServe's Python model server (PyPI `kserve`) around the same onnxruntime session, the way a KServe custom
predictor is written: preprocess decodes the Foundry `items` payload, predict runs the session, postprocess builds
the Foundry response; access log off like the others. Served on KServe's V1 route
`POST /v1/models/<name>:predict` with the same body.

    python benchmarks/peers/predictive_kserve.py MODEL.onnx PORT
"""
import logging
import sys

import kserve

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from predictive_common import OnnxPredictor  # noqa: E402


class FoundryOnnxModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.predictor = None
        self.load()

    def load(self):
        self.predictor = OnnxPredictor(self.path)
        self.ready = True
        return True

    def preprocess(self, payload, headers=None):
        return self.predictor.decode(payload["items"])

    def predict(self, array, headers=None):
        outputs, ms = self.predictor.run(array)
        return array, outputs, ms

    def postprocess(self, result, headers=None, response_headers=None):
        array, outputs, ms = result
        return self.predictor.response(array, outputs, ms)


if __name__ == "__main__":
    # KServe logs every request at INFO by default; the other servers keep no access log, so neither does this one.
    for name in ("uvicorn.access", "kserve.trace"):
        kserve.logging.KSERVE_LOG_CONFIG["loggers"][name]["level"] = "WARNING"
    logging.getLogger().setLevel(logging.WARNING)
    model = FoundryOnnxModel("model", sys.argv[1])
    kserve.ModelServer(http_port=int(sys.argv[2]), workers=1, enable_grpc=False, enable_docs_url=False,
                       enable_latency_logging=False).start([model])
