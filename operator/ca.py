"""The installation's certificate authority: kept in the Secret `foundry-inference-ca` in the operator namespace,
created on first start, loaded once and cached (never read again in a pass)."""
import base64
import logging
import threading

from foundry_inference.store import errors

from . import names
from .builders import tls

log = logging.getLogger("foundry_inference.operator.ca")


class CertificateAuthority:
    def __init__(self, store, namespace, now_fn):
        self.store, self.namespace, self.now_fn = store, namespace, now_fn
        self.cert = self.key = None
        self._lock = threading.Lock()

    def _load(self, secret):
        data = secret.get("data") or {}
        return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])

    def ensure(self):
        """(certificate PEM, key PEM); reads or creates the Secret the first time only."""
        with self._lock:
            if self.cert is None:
                try:
                    self.cert, self.key = self._load(self.store.get("Secret", self.namespace, names.CA_SECRET))
                except errors.NotFound:
                    cert, key = tls.generate_ca(self.now_fn())
                    try:
                        self.store.create(tls.ca_secret(self.namespace, cert, key))
                        log.info("created the TLS certificate authority in Secret %s/%s", self.namespace,
                                 names.CA_SECRET)
                        self.cert, self.key = cert, key
                    except errors.AlreadyExists:   # another operator replica won the race: use its CA
                        self.cert, self.key = self._load(self.store.get("Secret", self.namespace, names.CA_SECRET))
            return self.cert, self.key
