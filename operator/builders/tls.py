"""TLS material for the nginx sidecar: an installation-wide CA (Secret `foundry-inference-ca` in the operator
namespace; embedded mode also writes its certificate to <data-dir>/tls/ca.crt) and one leaf certificate per
deployment for its Service DNS names, localhost and 127.0.0.1, in a `kubernetes.io/tls` Secret `<name>-tls` that
also carries `ca.crt` so clients can verify. P-256 keys: fast to generate (a thousand deployments in about a second)
and supported by every TLS 1.2 client. A deployment can instead use a provided Secret (operator setting
tls.secretName); the operator then only mounts it.

Key generation is the one impure step; everything else here is a function of its arguments.
"""
import base64
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import names
from .common import metadata

_ENC = serialization.Encoding.PEM


def _b64(data):
    return base64.b64encode(data).decode()


def _key_pem(key):
    return key.private_bytes(_ENC, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def generate_ca(now, days=3650, common_name="foundry-inference CA"):
    """(certificate PEM, key PEM) of a new self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "foundry-inference")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(_ENC), _key_pem(key)


def service_dns_names(service, namespace, hosts=()):
    names_ = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
              f"{service}.{namespace}.svc.cluster.local", "localhost"]
    for host in hosts:
        if host and host not in names_:
            names_.append(host)
    return names_


def issue(ca_cert_pem, ca_key_pem, dns_names, now, days=365, ips=("127.0.0.1",)):
    """(certificate PEM, key PEM) of a server certificate for `dns_names` (+ IP SANs) signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(_ENC), _key_pem(key)


def ca_secret(namespace, cert_pem, key_pem):
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": names.CA_SECRET, "namespace": namespace,
                         "labels": {names.MANAGED_BY: names.MANAGED_BY_VALUE, names.COMPONENT_LABEL: "ca"}},
            "data": {"tls.crt": _b64(cert_pem), "tls.key": _b64(key_pem)}}


def secret(owner, cert_pem, key_pem, ca_pem):
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": metadata(owner, names.tls_secret(owner.name), "tls"),
            "data": {"tls.crt": _b64(cert_pem), "tls.key": _b64(key_pem), "ca.crt": _b64(ca_pem)}}


def renewal_reason(secret_obj, dns_names, ca_pem, now, renew_before_days):
    """Why the existing leaf Secret must be reissued, or None when it is still good."""
    data = secret_obj.get("data") or {}
    try:
        cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        base64.b64decode(data["tls.key"])
        ca_in_secret = base64.b64decode(data.get("ca.crt") or "")
    except (KeyError, ValueError, TypeError):
        return "certificate missing or unreadable"
    if ca_in_secret.strip() != ca_pem.strip():
        return "issued by another CA"
    try:
        sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                   .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = set()
    if not set(dns_names) <= sans:
        return "DNS names changed"
    if cert.not_valid_after_utc - now < datetime.timedelta(days=renew_before_days):
        return "expires soon"
    return None
