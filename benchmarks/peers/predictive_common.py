"""What every peer shares with the predictive server, so the comparison measures the servers and nothing else:
the same onnxruntime session options, the same payload decoding (items -> base64 -> JSON array -> numpy) and the
same response encoding (`<output>_<index>` keys, base64 JSON item, metadata)."""
import base64
import json
import os
import time

import numpy as np
import onnxruntime as ort

DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
          "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}


def make_session(path):
    """Session options as the benchmark gives the predictive server (FOUNDRY_INTRA_OP_THREADS, no spinning)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = int(os.environ.get("FOUNDRY_INTRA_OP_THREADS", "0"))
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxPredictor:
    def __init__(self, path):
        self.session = make_session(path)
        inp = self.session.get_inputs()[0]
        self.input_name, self.dtype, self.rank = inp.name, DTYPES[inp.type], len(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_id = os.path.splitext(os.path.basename(path))[0]

    def decode(self, items):
        if len(items) != 1:
            raise ValueError("exactly one item")
        item = items[0]
        if (item.get("encoder", "base64") != "base64"
                or item.get("content_type", "application/json") != "application/json"):
            raise ValueError("unsupported item")
        array = np.asarray(json.loads(base64.b64decode(item["data"])), dtype=self.dtype)
        return array[np.newaxis] if array.ndim == self.rank - 1 else array

    def run(self, array):
        started = time.perf_counter()
        outputs = self.session.run(None, {self.input_name: array})
        return outputs, (time.perf_counter() - started) * 1000.0

    def response(self, array, outputs, ms):
        result = {f"{name}_{i}": outputs[i].tolist() for i, name in enumerate(self.output_names)}
        data = base64.b64encode(json.dumps(result, separators=(",", ":")).encode()).decode()
        return {"metadata": {"model_id": self.model_id, "batch_size": int(array.shape[0]),
                             "inference_time_ms": round(ms, 3)},
                "items": [{"content_type": "application/json", "encoder": "base64", "data": data}]}
