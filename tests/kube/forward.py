"""A TCP forwarder from a loopback port of the host into a network namespace (and the thread helper to do the same
in-process).

    python forward.py --netns /run/netns/NAME --listen 127.0.0.1:PORT --to 10.250.0.1:6443

The listening socket is bound in the host's namespace first; then the process joins the cluster's namespace, so every
connection it opens to the target is made there. Nothing of the cluster is routed to the host's interfaces: only this
one loopback port leads in (used for the apiserver, which tests and the in-process Helm SDK reach from the host).
"""
import argparse
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def setns(path):
    """Move the calling THREAD into the network namespace at `path` (sockets it creates afterwards live there)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(path, fn, *args, **kwargs):
    """Run fn(*args) in a new thread that joined the namespace at `path`; returns its result or raises its error.
    Every socket fn creates (HTTP clients included) is in that namespace; the calling thread is untouched."""
    box = {}

    def body():
        try:
            setns(path)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, target):
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--listen", required=True, help="host:port on the host (port 0: any; printed on stdout)")
    parser.add_argument("--to", required=True, help="host:port inside the namespace")
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    setns(args.netns)       # single-threaded so far: the whole process joins
    to_host, to_port = args.to.rsplit(":", 1)
    serve(listener, (to_host, int(to_port)))


if __name__ == "__main__":
    sys.exit(main())
