"""The nginx TLS sidecar's configuration: one template for the pod (ConfigMap `<name>-nginx`) and for the embedded
node agent (same text, local paths and ports). nginx terminates TLS 1.2+ and proxies to the model server on
localhost; it does NO authentication (the app-layer middleware is the single enforcement point)."""
from dataclasses import dataclass

from .. import names
from .common import metadata

CONFIG_KEY = "nginx.conf"
# Mozilla "intermediate" TLS 1.2 suites (ECDSA first: the operator's certificates are P-256); TLS 1.3 suites are
# nginx/OpenSSL defaults.
CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
MAX_BODY = "50m"      # the ingress example's proxy-body-size
TIMEOUT_S = 600       # the ingress example's proxy read/send timeouts

_TEMPLATE = """\
# Rendered by the foundry-inference operator; edits are overwritten. TLS termination only, no auth.
worker_processes {workers};
pid {pid_path};
error_log {error_log} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log {access_log};
    server_tokens off;
    client_body_temp_path {temp_dir}/client_body;
    proxy_temp_path {temp_dir}/proxy;
    fastcgi_temp_path {temp_dir}/fastcgi;
    uwsgi_temp_path {temp_dir}/uwsgi;
    scgi_temp_path {temp_dir}/scgi;

    client_max_body_size {max_body};
    client_body_timeout 60s;
    client_header_timeout 30s;
    keepalive_timeout 75s;
    send_timeout {timeout}s;

    upstream model_server {{
{upstreams}
        keepalive 32;
    }}

    server {{
        listen {listen} ssl;

        ssl_certificate {cert_path};
        ssl_certificate_key {key_path};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:foundry_tls:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets off;

        location / {{
            proxy_pass http://model_server;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_connect_timeout 10s;
            proxy_read_timeout {timeout}s;
            proxy_send_timeout {timeout}s;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class NginxParams:
    listen: str = str(names.TLS_PORT)                  # "8443" in a pod, "127.0.0.1:<port>" on one machine
    app_ports: tuple = (5000,)                        # one per replica on one machine; one in a pod
    cert_path: str = f"{names.TLS_DIR}/tls.crt"
    key_path: str = f"{names.TLS_DIR}/tls.key"
    temp_dir: str = "/tmp/nginx"
    pid_path: str = "/tmp/nginx/nginx.pid"
    error_log: str = "stderr"
    access_log: str = "off"
    workers: str = "1"


def render(params):
    upstreams = "\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in params.app_ports)
    text = _TEMPLATE.format(workers=params.workers, pid_path=params.pid_path, error_log=params.error_log,
                            access_log=params.access_log, temp_dir=params.temp_dir, max_body=MAX_BODY,
                            timeout=TIMEOUT_S, upstreams=upstreams, listen=params.listen,
                            cert_path=params.cert_path, key_path=params.key_path, ciphers=CIPHERS)
    return text


def pod_config(app_port):
    return render(NginxParams(app_ports=(app_port,)))


def configmap(owner, app_port):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(owner, names.nginx_configmap(owner.name), "tls-proxy"),
            "data": {CONFIG_KEY: pod_config(app_port)}}
