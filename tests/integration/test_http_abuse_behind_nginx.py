"""Request smuggling and abuse against the pod's real pair: the nginx TLS sidecar (the operator's own configuration,
rendered for loopback with a certificate from the operator's CA) in front of the httptools front end. Whatever nginx
lets through, the front end must frame exactly as nginx did: each request reaches a handler once, a smuggled one
never, and both keep serving other clients."""
import datetime
import json
import os
import socket
import ssl
import subprocess
import time

import pytest
import tornado.web

from foundry_inference.operator.builders import nginx as nginx_builder
from foundry_inference.operator.builders import tls
from tests.support.fasthttp_server import recording_handler, serving
from tests.support.procs import free_port
from tests.support.require import require_tool
from tests.unit.test_fasthttp import read_response

pytestmark = pytest.mark.integration

HITS = []


Record = recording_handler(HITS)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    binary = require_tool("nginx", "apt-get install nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = tls.generate_ca(now)
    cert, key = tls.issue(ca_cert, ca_key, tls.service_dns_names("phi", "ns"), now)
    (tmp / "tls.crt").write_bytes(cert)
    (tmp / "tls.key").write_bytes(key)
    (tmp / "ca.crt").write_bytes(ca_cert)
    app_port, tls_port = free_port(), free_port()
    with serving(tornado.web.Application([(r"/.*", Record)]), port=app_port, max_body_bytes=4096,
                 header_timeout_s=1.0, body_timeout_s=1.0):
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_builder.render(nginx_builder.NginxParams(
            listen=f"127.0.0.1:{tls_port}", app_ports=(app_port,), cert_path=str(tmp / "tls.crt"),
            key_path=str(tmp / "tls.key"), temp_dir=str(tmp), pid_path=str(tmp / "nginx.pid"))))
        # as root, nginx's workers would run as `nobody` and could not use the temp dirs (as in the node agent)
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        proc = subprocess.Popen([binary, "-e", "stderr", "-c", str(conf), "-p", str(tmp), "-g", directives],
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.1)
        context = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
        context.check_hostname = False
        yield ("127.0.0.1", tls_port), context
        proc.terminate()
        proc.wait(10)


@pytest.fixture(autouse=True)
def clean():
    HITS.clear()


def exchange(sidecar, data, timeout=5):
    address, context = sidecar
    raw = socket.create_connection(address, timeout=timeout)
    s = context.wrap_socket(raw, server_hostname="phi.ns.svc")
    f = s.makefile("rb")
    s.sendall(data)
    responses = []
    try:
        while True:
            responses.append(read_response(f))
    except (TimeoutError, AssertionError, ConnectionError, ssl.SSLError, ValueError):
        pass
    s.close()
    return responses


def still_answers(sidecar):
    responses = exchange(sidecar, b"GET /alive HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    return [r[0] for r in responses] == [200] and json.loads(responses[0][2])["path"] == "/alive"


ATTACKS = {
    "conflicting-content-length": b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 37\r\n\r\n"
                                  b"abcdeGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "content-length-and-chunked": b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
                                  b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "obfuscated-transfer-encoding": b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5"
                                    b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "chunk-size-overflow": b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000000000005\r\nabcde\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "obs-fold": b"GET /a HTTP/1.1\r\nHost: t\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n",
    "bare-cr": b"GET /a HTTP/1.1\r\nHost: t\r\nX-A: a\rContent-Length: 5\r\n\r\nabcde",
    "body-hides-a-request": b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 36\r\n\r\n"
                            b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    "chunked-body-hides-a-request": b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"24\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_smuggling_through_nginx_reaches_no_handler_twice_and_never_smuggles(sidecar, name):
    responses = exchange(sidecar, ATTACKS[name] + b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    statuses = [r[0] for r in responses]
    assert all(s in (200, 400, 413, 501) for s in statuses), (name, statuses)    # 501: nginx, unknown coding
    paths = [path for _m, path, _b in HITS]
    assert "/smuggled" not in paths, (name, HITS)
    assert len(paths) == len(set(paths)), (name, HITS)           # nothing twice
    assert len([s for s in statuses if s == 200]) == len(paths)  # every 200 is exactly one handler call
    time.sleep(0.1)
    assert still_answers(sidecar)


def test_pipelined_requests_through_nginx_are_each_served_once_in_order(sidecar):
    data = b"".join(b"POST /p%d HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n%02d" % (i, i) for i in range(5))
    responses = exchange(sidecar, data + b"GET /end HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert [json.loads(r[2])["path"] for r in responses] == [f"/p{i}" for i in range(5)] + ["/end"]
    assert HITS == [("POST", f"/p{i}", b"%02d" % i) for i in range(5)] + [("GET", "/end", b"")]


def test_attack_an_oversized_body_through_nginx_is_413_and_no_handler_runs(sidecar):
    # nginx allows 50m; the front end's own limit (here 4096) answers, and the connection stays usable or closes
    responses = exchange(sidecar, b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 8000\r\n\r\n" + b"x" * 8000)
    assert [r[0] for r in responses][:1] == [413] and HITS == []
    huge = exchange(sidecar, b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 60000000\r\n\r\n" + b"x" * 1000)
    assert [r[0] for r in huge] == [413] and HITS == []            # nginx's own limit, before anything is proxied
    assert still_answers(sidecar)


def test_attack_slow_clients_through_nginx_do_not_hold_the_server(sidecar):
    address, context = sidecar
    slow = context.wrap_socket(socket.create_connection(address, timeout=10), server_hostname="phi.ns.svc")
    slow.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n")                 # and never the rest
    for _ in range(3):
        assert still_answers(sidecar)
    slow.close()
    assert HITS == [("GET", "/alive", b"")] * 3
