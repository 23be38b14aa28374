"""Certificates and kubeconfigs of the test cluster: one CA, the apiserver's serving certificate (valid for the node
address, the `kubernetes` Service address and names, and loopback), the ServiceAccount signing key, static tokens;
and a CA of its own per TLS server (the cluster's registry), as an on-prem registry has."""
import datetime
import ipaddress
from pathlib import Path

import yaml


def _write_key(path, key):
    from cryptography.hazmat.primitives import serialization
    Path(path).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))


def write_ca_and_cert(directory, name, ips, dns_names, ca_name=None):
    """A CA of its own (`<name>-ca.crt`/`.key`) and a serving certificate it signed (`<name>.crt`/`.key`) valid for
    `ips` + `dns_names`, under `directory`; returns the three paths (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name or f"foundry-test-{name}-ca")])
    ca = (x509.CertificateBuilder().subject_name(issuer).issuer_name(issuer).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(n) for n in dns_names]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = d / f"{name}-ca.crt", d / f"{name}.crt", d / f"{name}.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(d / f"{name}-ca.key", ca_key)
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths[2], key)
    return tuple(str(p) for p in paths)


def write_pki(directory, ips, dns_names):
    """ca.crt/ca.key, apiserver.crt/.key for `ips` + `dns_names`, sa.key/sa.pub under `directory`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    d = Path(directory)
    write_ca_and_cert(d, "apiserver", ips, dns_names, ca_name="foundry-test-cluster-ca")
    (d / "apiserver-ca.crt").rename(d / "ca.crt")
    (d / "apiserver-ca.key").rename(d / "ca.key")
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(d / "sa.key", sa)
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))


def write_tokens(path, users):
    """users: {name: (token, [groups])} -> the apiserver's --token-auth-file."""
    lines = [f'{token},{user},{user}-uid,"{",".join(groups)}"' for user, (token, groups) in users.items()]
    Path(path).write_text("\n".join(lines) + "\n")


def write_kubeconfig(path, server, ca_file, token, user="admin"):
    Path(path).write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": user,
        "clusters": [{"name": "foundry-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "foundry-test", "user": user}}]}))
    return str(path)
