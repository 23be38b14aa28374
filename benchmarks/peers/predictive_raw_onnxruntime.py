"""The limit: the same per-request work as a server (decode the items payload, session.run one row, encode the
response) in a loop in one process, no HTTP. Prints requests/s and microseconds per request.

    python benchmarks/peers/predictive_raw_onnxruntime.py MODEL.onnx BODY_FILE SECONDS
"""
import json
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from predictive_common import OnnxPredictor  # noqa: E402


def main():
    predictor = OnnxPredictor(sys.argv[1])
    body = open(sys.argv[2], "rb").read()
    seconds = float(sys.argv[3])
    runs_only, n, started = 0.0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        array = predictor.decode(json.loads(body)["items"])
        outputs, ms = predictor.run(array)
        json.dumps(predictor.response(array, outputs, ms))
        runs_only += ms
        n += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"requests_per_s": n / elapsed, "us_per_request": elapsed / n * 1e6,
                      "us_per_run": runs_only / n * 1000.0}))


if __name__ == "__main__":
    main()
