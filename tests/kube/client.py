"""Talking to the test cluster's Services and pods from the tests: inside its network namespace, with the Services'
DNS names resolved to their ClusterIPs (the cluster runs no DNS server).

    with NetnsClient(info) as net:
        net.hosts[name] = cluster_ip
        net.call(fn, *args)          # fn runs in a thread inside the namespace; its sockets live there

The name mapping is a thread-local hook in front of socket.getaddrinfo: only threads started by `call` see it, so the
rest of the test process (the Helm SDK, the kubernetes client on the loopback forwarder) resolves names as before.
"""
import socket
import threading

from tests.kube.forward import in_netns

_local = threading.local()
_real_getaddrinfo = socket.getaddrinfo
_installed = False


def _getaddrinfo(host, *args, **kwargs):
    hosts = getattr(_local, "hosts", None)
    if hosts and isinstance(host, str) and host in hosts:
        host = hosts[host]
    return _real_getaddrinfo(host, *args, **kwargs)


def _install():
    global _installed
    if not _installed:
        socket.getaddrinfo = _getaddrinfo
        _installed = True


class NetnsClient:
    def __init__(self, info):
        self.netns = info["netns"]
        self.hosts = {}
        _install()

    def call(self, fn, *args, **kwargs):
        def body():
            _local.hosts = self.hosts
            return fn(*args, **kwargs)
        return in_netns(self.netns, body)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
