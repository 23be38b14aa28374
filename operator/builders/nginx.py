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
# Overload (docs/tls-sidecar.md): at most IN_FLIGHT requests are passed to the model server at once; the next one is
# answered 429 + Retry-After by nginx itself, in the envelope of the server behind it, instead of queueing in nginx
# or being reset. Every in-flight request holds two connections (client + upstream), so the worker's connection table
# is sized for CLIENTS idle or waiting clients on top of that, and the upstream keep-alive pool holds every upstream
# connection the limit allows, so none is opened per request.
IN_FLIGHT = 256
CLIENTS = 8192
RETRY_AFTER_S = 1
_BUSY = f"the TLS proxy holds {IN_FLIGHT} requests in flight; retry after {RETRY_AFTER_S} s"
# The chat server's routes (OpenAI envelope); everything else is the predictive server's queue-full payload.
_OPENAI_PATHS = "~^/v1/(chat|completions|embeddings|audio|models|responses)"
_BUSY_OPENAI = ('{"error":{"message":"Too many requests: ' + _BUSY + '","type":"rate_limit_error",'
                '"code":"rate_limit_error","param":null}}')
_BUSY_PREDICTIVE = f'{{"error":"Queue full: {_BUSY}","queue_depth":{IN_FLIGHT},"retry_after":{RETRY_AFTER_S}}}'

_TEMPLATE = """\
# Rendered by the foundry-inference operator; edits are overwritten. TLS termination only, no auth.
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {pid_path};
error_log {error_log} warn;

events {{
    worker_connections {worker_connections};
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
    keepalive_requests 10000;
    send_timeout {timeout}s;

    # overload: requests in flight to the model server, counted per listening port (one sidecar, one key)
    limit_conn_zone $server_port zone=foundry_inflight:1m;
    limit_conn_status 429;
    limit_conn_log_level info;         # a refusal is not a problem of the proxy: below the error_log level
    map $uri $foundry_busy {{
        {openai_paths} '{busy_openai}';
        default '{busy_predictive}';
    }}

    upstream model_server {{
{upstreams}
        keepalive {in_flight};
        keepalive_requests 100000;
        keepalive_timeout 60s;
    }}

    server {{
        listen {listen} ssl backlog=4096;

        ssl_certificate {cert_path};
        ssl_certificate_key {key_path};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {ciphers};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:foundry_tls:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets off;

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

        location / {{
            limit_conn foundry_inflight {in_flight};
            error_page 429 @busy;
            proxy_pass http://model_server;
        }}

        # probes are never refused for load: a busy pod is not a dead one
        location ~ ^/(health|healthz|ready|readyz)$ {{
            proxy_pass http://model_server;
        }}

        location @busy {{
            default_type application/json;
            add_header Retry-After {retry_after} always;
            add_header X-Content-Type-Options nosniff always;
            return 429 $foundry_busy;
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
    activator_port: int = None    # embedded scale to zero: the activator, a backup behind the replicas


def _upstreams(params):
    """The replicas; with an activator it is their backup (nginx tries it when no replica accepts the connection),
    and the only server while no replica is ready (docs/autoscaling.md)."""
    lines = [f"        server 127.0.0.1:{port} max_fails=0;" for port in params.app_ports]
    if params.activator_port:
        backup = " backup" if lines else ""
        lines.append(f"        server 127.0.0.1:{params.activator_port} max_fails=0{backup};")
    return "\n".join(lines)


def render(params):
    upstreams = _upstreams(params)
    text = _TEMPLATE.format(workers=params.workers, pid_path=params.pid_path, error_log=params.error_log,
                            access_log=params.access_log, temp_dir=params.temp_dir, max_body=MAX_BODY,
                            timeout=TIMEOUT_S, upstreams=upstreams, listen=params.listen,
                            cert_path=params.cert_path, key_path=params.key_path, ciphers=CIPHERS,
                            nofile=2 * (CLIENTS + 2 * IN_FLIGHT), worker_connections=CLIENTS + 2 * IN_FLIGHT,
                            in_flight=IN_FLIGHT, retry_after=RETRY_AFTER_S, openai_paths=_OPENAI_PATHS,
                            busy_openai=_BUSY_OPENAI, busy_predictive=_BUSY_PREDICTIVE)
    return text


def pod_config(app_port):
    return render(NginxParams(app_ports=(app_port,)))


def configmap(owner, app_port):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(owner, names.nginx_configmap(owner.name), "tls-proxy"),
            "data": {CONFIG_KEY: pod_config(app_port)}}
