"""The httptools front end on raw sockets: keep-alive, pipelining, HTTP/1.0, chunked bodies both ways,
Expect: 100-continue, limits, malformed requests, idle timeout and client disconnects."""
import asyncio
import json
import socket
import threading
import time

import pytest
import tornado.web

from tests.support.fasthttp_server import serving

pytestmark = pytest.mark.unit


class Streaming(tornado.web.RequestHandler):
    async def get(self):
        self.write(b"hello ")
        await self.flush()
        self.write(b"world")


class Echo(tornado.web.RequestHandler):
    def post(self):
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(self.request.body)


class Slow(tornado.web.RequestHandler):
    closed = threading.Event()

    async def get(self):
        await asyncio.sleep(float(self.get_argument("s", "0.2")))
        self.finish({"path": self.request.path, "remote_ip": self.request.remote_ip})

    def on_connection_close(self):
        Slow.closed.set()


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.finish({"path": self.request.path, "query": self.get_argument("q", None)})

    head = get


@pytest.fixture(scope="module")
def server():
    app = tornado.web.Application([(r"/stream", Streaming), (r"/echo", Echo), (r"/slow", Slow), (r"/.*", Hello)])
    with serving(app, max_body_bytes=4096, keep_alive_timeout_s=1.0) as address:
        yield address


def connect(address):
    s = socket.create_connection(address, timeout=5)
    return s, s.makefile("rb")


def read_response(f, head=False):
    status_line = f.readline()
    assert status_line, "connection closed"
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if head or status in (100, 204, 304):
        return status, headers, body
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(f.readline().strip(), 16)
            chunk = f.read(size + 2)[:-2]
            if size == 0:
                break
            body += chunk
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()
    return status, headers, body


def test_keep_alive_and_query_strings(server):
    s, f = connect(server)
    for q in ("a", "b"):
        s.sendall(b"GET /x?q=%s HTTP/1.1\r\nHost: t\r\n\r\n" % q.encode())
        status, headers, body = read_response(f)
        assert status == 200 and "connection" not in headers
        assert json.loads(body) == {"path": "/x", "query": q}
    s.close()


def test_pipelined_requests_are_answered_in_order(server):
    s, f = connect(server)
    s.sendall(b"GET /slow?s=0.2 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde"
              b"GET /last HTTP/1.1\r\nHost: t\r\n\r\n")
    first, second, third = read_response(f), read_response(f), read_response(f)
    assert json.loads(first[2])["path"] == "/slow" and json.loads(first[2])["remote_ip"] == "127.0.0.1"
    assert second[2] == b"abcde"
    assert json.loads(third[2])["path"] == "/last"
    s.close()


def test_http10_closes_unless_keep_alive_is_asked(server):
    s, f = connect(server)
    s.sendall(b"GET /a HTTP/1.0\r\n\r\n")
    status, headers, _ = read_response(f)
    assert status == 200 and headers["connection"] == "close"
    assert f.read() == b""
    s.close()
    s, f = connect(server)
    s.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = read_response(f)
    assert headers["connection"] == "keep-alive"
    s.sendall(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert read_response(f)[0] == 200
    s.close()


def test_connection_close_is_honoured(server):
    s, f = connect(server)
    s.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, _ = read_response(f)
    assert headers["connection"] == "close" and f.read() == b""
    s.close()


def test_chunked_request_and_streamed_response(server):
    s, f = connect(server)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert read_response(f)[2] == b"abcdefg"
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = read_response(f)
    assert headers["transfer-encoding"] == "chunked" and body == b"hello world"
    s.close()


def test_head_has_no_body(server):
    s, f = connect(server)
    s.sendall(b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, _ = read_response(f, head=True)
    assert status == 200 and int(headers["content-length"]) > 0
    s.sendall(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")     # the stream is still in sync
    assert json.loads(read_response(f)[2])["path"] == "/after"
    s.close()


def test_expect_100_continue(server):
    s, f = connect(server)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert read_response(f)[0] == 100
    s.sendall(b"xyz")
    assert read_response(f)[2] == b"xyz"
    s.close()
    s, f = connect(server)       # too large: refused before the body is sent
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n")
    status, headers, body = read_response(f)
    assert status == 413 and "exceeds 4096 bytes" in json.loads(body)["detail"]
    s.close()


def test_body_limits(server):
    s, f = connect(server)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    status, headers, body = read_response(f)
    assert status == 413 and headers["connection"] == "close"
    s.close()
    s, f = connect(server)
    chunk = b"1000\r\n" + b"y" * 4096 + b"\r\n"
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n")
    assert read_response(f)[0] == 413
    s.close()


@pytest.mark.parametrize("request_bytes,status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
])
def test_malformed_requests_get_an_error_and_a_close(server, request_bytes, status):
    s, f = connect(server)
    s.sendall(request_bytes)
    got, headers, body = read_response(f)
    assert got == status and headers["connection"] == "close" and "detail" in json.loads(body)
    s.close()


def test_upgrade_is_ignored_and_the_connection_closed_after_the_answer(server):
    s, f = connect(server)
    s.sendall(b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nwebsocket bytes")
    status, headers, body = read_response(f)
    assert status == 200 and headers["connection"] == "close" and json.loads(body)["path"] == "/up"
    assert f.read() == b""
    s.close()


def test_idle_keep_alive_connections_are_closed(server):
    s, f = connect(server)
    s.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
    read_response(f)
    started = time.monotonic()
    assert f.read() == b""                      # closed by the server
    assert time.monotonic() - started < 4
    s.close()


def test_disconnect_reaches_the_handler(server):
    Slow.closed.clear()
    s, f = connect(server)
    s.sendall(b"GET /slow?s=2 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.1)
    f.close()
    s.close()
    assert Slow.closed.wait(2)


def test_the_front_ends_headers_object_behaves_as_tornados():
    # apps/fasthttp.py caches header-name normalization in an HTTPHeaders subclass; whatever is set and read through
    # it must look exactly as through Tornado's own class (a Tornado upgrade that changes its internals fails here)
    from tornado.httputil import HTTPHeaders

    from foundry_inference.apps.fasthttp import _Headers
    ours, theirs = _Headers(), HTTPHeaders()
    for headers in (ours, theirs):
        headers["content-TYPE"] = "application/json"
        headers["x-api-key"] = "k"
        headers.add("X-Api-Key", "k2")
        headers["Set-Cookie"] = "a=b"
        headers.add("set-cookie", "c=d")
        headers["host"] = "x"
        headers["Host"] = "y"               # replaces
        del headers["set-cookie"]
    assert sorted(ours.get_all()) == sorted(theirs.get_all())
    for name in ("Content-Type", "content-type", "X-API-KEY", "Host", "Set-Cookie", "Missing"):
        assert ours.get_list(name) == theirs.get_list(name)
        assert ours.get(name) == theirs.get(name) and (name in ours) == (name in theirs)
    assert dict(ours) == dict(theirs) and len(ours) == len(theirs)
    assert ours["x-api-key"] == "k,k2"
