"""The sidecar's nginx configuration is accepted by the real `nginx -t`: the exact ConfigMap text (its pod paths moved
under a temporary directory) and the node agent's local rendering, with a certificate issued by the operator's CA."""
import datetime
import subprocess

import pytest

from foundry_inference.operator import names
from foundry_inference.operator.builders import nginx, tls

pytestmark = [pytest.mark.integration,
              pytest.mark.usefixtures("nginx")]


def certificate(directory):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = tls.generate_ca(now)
    cert, key = tls.issue(ca_cert, ca_key, tls.service_dns_names("phi", "ns"), now)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)


def nginx_t(conf, prefix):
    return subprocess.run(["nginx", "-t", "-e", "stderr", "-c", str(conf), "-p", str(prefix)], capture_output=True,
                          text=True, timeout=30)


def test_the_configmap_text_passes_nginx_t(tmp_path):
    certificate(tmp_path / "tls")
    (tmp_path / "run").mkdir()
    text = nginx.pod_config(5000)
    local = text.replace(names.TLS_DIR, str(tmp_path / "tls")).replace("/tmp/nginx", str(tmp_path / "run"))
    assert local.count(str(tmp_path)) >= 8            # every path moved: nothing else in the text differs
    conf = tmp_path / "nginx.conf"
    conf.write_text(local)
    result = nginx_t(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_the_local_rendering_passes_nginx_t_and_a_broken_one_does_not(tmp_path):
    certificate(tmp_path / "tls")
    params = nginx.NginxParams(listen="127.0.0.1:18443", app_ports=(7001, 7002, 7003),
                               cert_path=str(tmp_path / "tls" / "tls.crt"), key_path=str(tmp_path / "tls" / "tls.key"),
                               temp_dir=str(tmp_path), pid_path=str(tmp_path / "nginx.pid"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx.render(params))
    assert nginx_t(conf, tmp_path).returncode == 0
    (tmp_path / "tls" / "tls.key").write_text("not a key")
    broken = nginx_t(conf, tmp_path)
    assert broken.returncode != 0 and "tls.key" in broken.stderr
