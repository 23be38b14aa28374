"""The model fetcher's network side (fetch.py is the fetcher): the SSRF guard, registry authentication (bearer token
or basic), streaming downloads with progress, size caps and digest checks, and resumable range requests."""
import base64
import hashlib
import ipaddress
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from .blobcache import format_size, sha256_file

_CHUNK = 1 << 20


class FetchError(Exception):
    pass


class DigestMismatch(FetchError):
    pass


def log(message):
    print(f"model-fetcher: {message}", file=sys.stderr, flush=True)


def _allowlist(env=None):
    """FOUNDRY_REGISTRY_ALLOWLIST: the control plane's list of `host[:port]` admitted on private addresses."""
    raw = (os.environ if env is None else env).get("FOUNDRY_REGISTRY_ALLOWLIST") or ""
    return {item.strip().lower() for item in raw.split(",") if item.strip()}


def check_host(host, allow_private=False, allowlist=None):
    """Refuse hosts that resolve to internal addresses (SSRF guard, re-checked at fetch time)."""
    if allow_private:
        return
    allowlist = _allowlist() if allowlist is None else allowlist
    name = urllib.parse.urlsplit(f"//{host}").hostname or host
    if host.lower() in allowlist or name.lower() in allowlist:
        return
    try:
        infos = socket.getaddrinfo(name, None)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {name}: {exc.strerror}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast or addr.is_reserved:
            raise FetchError(f"refusing to fetch from {name}: it resolves to the internal address {addr}")

class Http:
    def __init__(self, username=None, password=None, insecure=False, allow_private=False, timeout=60):
        self.username, self.password = username, password
        self.insecure, self.allow_private, self.timeout = insecure, allow_private, timeout
        self.token = None

    def _open(self, url, headers, auth=None):
        req = urllib.request.Request(url, headers={**headers, "User-Agent": "foundry-inference-fetcher"})
        if auth:
            req.add_header("Authorization", auth)
        return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - host checked by the caller

    def _basic(self):
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _bearer_token(self, challenge):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise FetchError(f"registry sent an unusable auth challenge: {challenge}")
        check_host(urllib.parse.urlparse(realm).netloc, self.allow_private)
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        try:
            with self._open(url, {"Accept": "application/json"}, self._basic()) as resp:
                body = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            raise FetchError(f"registry token request refused: HTTP {exc.code} (check the credentials Secret)") \
                from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise FetchError("registry token response carried no token")
        return f"Bearer {token}"

    def get(self, url, headers):
        """Open `url`, answering one auth challenge (bearer token or basic)."""
        try:
            return self._open(url, headers, self.token)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
            challenge = exc.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            self.token = self._bearer_token(challenge)
        else:
            self.token = self._basic()
            if self.token is None:
                raise FetchError("the registry requires credentials and none were configured")
        return self._open(url, headers, self.token)


def download(resp, target, size=None, digest=None, label="artifact", offset=0, cap=None):
    """Stream `resp` into `target` (after the `offset` bytes already there), logging progress; never more than `size`
    (or `cap`) bytes in all; verify the whole file's sha256 digest when given."""
    size = size or (offset + int(resp.headers.get("Content-Length") or 0)) or None
    cap = size or cap
    sha = sha256_file(target) if offset else hashlib.sha256()
    done, last_log, last_pct = offset, time.monotonic(), -10
    read = getattr(resp, "read1", resp.read)      # what has arrived: a killed fetcher leaves as much as possible
    with open(target, "ab" if offset else "wb") as out:
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                break
            if cap is not None and done + len(chunk) > cap:
                raise FetchError(f"{label}: the server sent more than the {format_size(cap)} expected")
            out.write(chunk)
            sha.update(chunk)
            done += len(chunk)
            pct = int(done * 100 / size) if size else None
            if (pct is not None and pct >= last_pct + 10) or time.monotonic() - last_log > 10:
                log(f"{label}: {pct if pct is not None else '?'}% ({done} of {size or '?'} bytes)")
                last_log, last_pct = time.monotonic(), pct if pct is not None else last_pct
    if size is not None and done < size:          # the connection ended early: a cached partial is resumed next time
        raise FetchError(f"{label}: the download stopped after {done} of {size} bytes")
    if digest:
        algo, _, expected = digest.partition(":")
        if algo != "sha256" or sha.hexdigest() != expected:
            raise DigestMismatch(f"{label}: digest mismatch (expected {digest}, got sha256:{sha.hexdigest()})")
    if last_pct < 100:
        log(f"{label}: 100% ({done} bytes)")
    return done


def open_from(http, url, offset, size, label):
    """GET `url` from byte `offset` on: (response, the offset its body starts at). A registry that ignores the range
    (200) or answers another one gets read from the start."""
    if offset:
        log(f"{label}: resuming the download at byte {offset} of {size}")
        try:
            resp = http.get(url, {"Accept": "*/*", "Range": f"bytes={offset}-"})
        except urllib.error.HTTPError as exc:
            if exc.code != 416:
                raise
            log(f"{label}: the registry refused the range (HTTP 416); downloading from the start")
        else:
            got = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (resp.headers.get("Content-Range") or "").strip())
            if resp.status == 206 and got and int(got.group(1)) == offset and int(got.group(2)) == size - 1 and \
                    got.group(3) in ("*", str(size)):
                return resp, offset
            if resp.status == 200:
                log(f"{label}: the registry does not resume downloads (HTTP 200); downloading from the start")
                return resp, 0
            resp.close()
            log(f"{label}: the registry answered HTTP {resp.status} with range "
                f"{(resp.headers.get('Content-Range') or 'none')[:60]!r}; downloading from the start")
    return http.get(url, {"Accept": "*/*"}), 0
