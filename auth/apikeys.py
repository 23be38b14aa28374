"""API keys read from files (a mounted Secret), re-read at most every few seconds so a rotation needs no restart.

Keys are compared as SHA-256 digests with hmac.compare_digest: constant time and independent of the key's length.
Only an 8-hex-digit fingerprint of a key is ever logged.
"""
import hashlib
import hmac
import logging
import os
import threading
import time

from foundry_inference.auth.errors import InvalidApiKey
from foundry_inference.auth.principal import ADMIN_KEY, DEPLOYMENT_KEY, Principal

log = logging.getLogger("foundry_inference.auth")

KEY_FILES = ("primary-key", "secondary-key")
MAX_KEY_BYTES = 4096


def fingerprint(secret):
    """First 8 hex digits of the SHA-256 of a secret: enough to tell keys apart in logs, useless to an attacker."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8", "surrogateescape")
    return hashlib.sha256(secret).hexdigest()[:8]


# Re-read key files this often: well inside the 5 s bound for a rotation (docs/api.md), even on a loaded node, and
# cheap (two small reads per interval). This bounds how long a REPLACED key keeps working.
DEFAULT_RELOAD_S = 2.0
# A key nobody knows may be a just-rotated one: re-read the files at once, but at most this often, so a flood of bad
# keys costs at most a few small reads per second. This makes a NEW key work as soon as its file is written.
UNKNOWN_KEY_RELOAD_S = 0.1


class KeyFile:
    """One key in one file. A missing, unreadable or empty file disables the key (it never matches anything)."""

    def __init__(self, path, *, name=None, kind=DEPLOYMENT_KEY, identity=None, reload_s=DEFAULT_RELOAD_S,
                 clock=time.monotonic):
        self.path = path
        self.name = name or os.path.basename(path)
        self.kind = kind
        self.identity = identity or self.name
        self.reload_s = reload_s
        self.clock = clock
        self._digest = None
        self._fingerprint = None
        self._next_check = float("-inf")
        self._last_read = float("-inf")
        self._lock = threading.Lock()

    def digest(self):
        """SHA-256 digest of the current key, or None while the key is disabled."""
        if self.clock() >= self._next_check:
            self._reread(lambda: self.clock() >= self._next_check)
        return self._digest

    def digest_fresh(self):
        """digest() after a re-read, unless the file was read within UNKNOWN_KEY_RELOAD_S."""
        self._reread(lambda: self.clock() - self._last_read >= UNKNOWN_KEY_RELOAD_S)
        return self._digest

    def _reread(self, still_due):
        with self._lock:
            if still_due():
                self._reload()
                self._last_read = self.clock()
                self._next_check = self._last_read + self.reload_s

    def _reload(self):
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_KEY_BYTES + 1)
        except FileNotFoundError:
            raw, why = b"", "file missing"
        except OSError as exc:
            raw, why = b"", f"unreadable ({exc.strerror})"
        else:
            why = "empty file"
            if len(raw) > MAX_KEY_BYTES:
                raw, why = b"", f"longer than {MAX_KEY_BYTES} bytes"
        secret = raw.strip()
        fp = fingerprint(secret) if secret else None
        if fp != self._fingerprint:
            if fp:
                log.info("api key %s loaded (fingerprint %s)", self.name, fp,
                         extra={"fields": {"key": self.name, "fingerprint": fp}})
            else:
                log.warning("api key %s disabled: %s", self.name, why, extra={"fields": {"key": self.name}})
        self._fingerprint = fp
        self._digest = hashlib.sha256(secret).digest() if secret else None


class ApiKeyAuthenticator:
    """Matches a presented key against every configured key (a deployment's primary + secondary, the admin key)."""

    def __init__(self, key_files):
        self.key_files = list(key_files)
        self._principals = {id(kf): Principal(identity=kf.identity, kind=kf.kind, display=kf.name)
                            for kf in self.key_files}

    @classmethod
    def from_paths(cls, *, keys_dir=None, admin_key_file=None, deployment=None, reload_s=DEFAULT_RELOAD_S,
                   clock=time.monotonic):
        files = []
        if keys_dir:
            prefix = f"apikey:{deployment}" if deployment else "apikey"
            for fname in KEY_FILES:
                files.append(KeyFile(os.path.join(keys_dir, fname), name=fname, kind=DEPLOYMENT_KEY,
                                     identity=f"{prefix}:{fname.split('-')[0]}", reload_s=reload_s, clock=clock))
        if admin_key_file:
            files.append(KeyFile(admin_key_file, name="admin-key", kind=ADMIN_KEY, identity="apikey:admin",
                                 reload_s=reload_s, clock=clock))
        return cls(files)

    def authenticate(self, presented):
        if not presented:
            raise InvalidApiKey("The API key is empty")
        try:
            candidate = hashlib.sha256(presented.encode("utf-8")).digest()
        except UnicodeError:
            raise InvalidApiKey() from None
        match = self._match(candidate, KeyFile.digest)
        if match is None:                    # perhaps a key rotated a moment ago: look at the files once more
            match = self._match(candidate, KeyFile.digest_fresh)
        if match is None:
            log.debug("api key rejected (fingerprint %s)", fingerprint(presented))
            raise InvalidApiKey()
        return self._principals[id(match)]

    def _match(self, candidate, digest_of):
        match = None
        for kf in self.key_files:            # no early exit: the work does not depend on which key matched
            digest = digest_of(kf)
            if digest is not None and hmac.compare_digest(candidate, digest) and match is None:
                match = kf
        return match
