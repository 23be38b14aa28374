#!/usr/bin/env python3
"""CPU of a 1-row iris `/v1/predict` request through the predictive server's front end and direct route, in one
process and without sockets: 64 connections each send one request per round to the httptools protocol objects (a
fake transport), the event loop runs until every answer is written. Prints microseconds of process CPU per request
(min and median of the repetitions). No network, no wrk: for profiling and for counting instructions, which do not
depend on the machine's load:

    # instructions per request = (Ir of 2 repetitions - Ir of 1) / 6400; run from a directory without the repo's
    # foundry_inference on sys.path; PYTHONPATH=<tree> to measure another commit's code (see source_tree() in
    # bench_predictive.py for how such a tree is laid out)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python benchmarks/predictive_inprocess.py key 1
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python benchmarks/predictive_inprocess.py key 2

Arguments: `key` (API-key auth on, `Authorization: Bearer` on every request) or `nokey`; repetitions of 100 rounds.
"""
import asyncio
import os
import sys
import tempfile
import time

KEY = "fndry-pk-" + "0" * 40
BODY = (b'{"items": [{"content_type": "application/json", "encoder": "base64", '
        b'"data": "W1s1LjEsIDMuNSwgMS40LCAwLjJdXQ=="}]}')


class _Transport:
    def __init__(self):
        self.writes = 0

    def write(self, data):
        self.writes += 1

    def get_extra_info(self, name):
        return ("127.0.0.1", 5555)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass


async def main(keyed, repetitions):
    from foundry_inference.apps.fasthttp import HttpToolsProtocol, HttpToolsServer
    from foundry_inference.apps.predictive import server as server_module
    from foundry_inference.apps.predictive.decoding import dumps
    from foundry_inference.apps.predictive.direct import DirectPredict
    from foundry_inference.apps.predictive.service import PredictiveService
    from foundry_inference.apps.predictive.settings import PredictiveSettings
    from foundry_inference.auth.service import AuthService
    from foundry_inference.auth.settings import AuthSettings
    from tests.support import models

    keys = tempfile.mkdtemp(prefix="bench-keys-")
    with open(os.path.join(keys, "primary-key"), "w") as f:
        f.write(KEY)
    settings = PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": models.iris_logreg().path,
                                            "FOUNDRY_INTRA_OP_THREADS": "1"})
    auth = AuthService.from_settings(AuthSettings(mode="api-key", api_keys_dir=keys) if keyed
                                     else AuthSettings(mode="none"))
    request = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:18702\r\nContent-Type: application/json\r\n"
               + (b"Authorization: Bearer %s\r\n" % KEY.encode() if keyed else b"")
               + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    service = PredictiveService(settings)
    service.load()
    app = server_module.make_app(settings, auth=auth, service=service, load=False)
    server = HttpToolsServer(app, max_body_bytes=settings.max_body_bytes,
                             error_body=lambda status, message: dumps({"detail": message}),
                             direct_routes={("POST", "/v1/predict"): DirectPredict(app)})
    server.loop = asyncio.get_running_loop()
    connections = []
    for _ in range(64):
        proto, transport = HttpToolsProtocol(server), _Transport()
        proto.connection_made(transport)
        connections.append((proto, transport))

    async def one_round():
        for proto, _transport in connections:
            proto.data_received(request)
        while any(transport.writes == 0 for _proto, transport in connections):
            await asyncio.sleep(0)
        for _proto, transport in connections:
            transport.writes = 0

    for _ in range(50):
        await one_round()
    per_request = []
    for _ in range(repetitions):
        started = time.process_time()
        for _ in range(100):
            await one_round()
        per_request.append((time.process_time() - started) / (100 * len(connections)) * 1e6)
    per_request.sort()
    print(f"{'API key' if keyed else 'no auth'}: {per_request[0]:.1f} us/request (min), "
          f"{per_request[len(per_request) // 2]:.1f} (median) over {repetitions} x 6400 requests")


if __name__ == "__main__":
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests.support; after PYTHONPATH
    asyncio.run(main(sys.argv[1] == "key", int(sys.argv[2]) if len(sys.argv) > 2 else 7))
