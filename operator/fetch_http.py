"""The model fetcher's network side (fetch.py is the fetcher): connections pinned to addresses the SSRF guard
(foundry_inference/ssrf.py) checked, a strict redirect policy, registry authentication (bearer token or basic),
streaming downloads with progress, size caps and digest checks, and resumable range requests."""
import base64
import hashlib
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
from http import client as http_client

from foundry_inference import ssrf

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
    return ssrf.parse_allowlist((os.environ if env is None else env).get("FOUNDRY_REGISTRY_ALLOWLIST") or "")


def registry_cas(env=None):
    """FOUNDRY_REGISTRY_CAS: `{"host[:port]": "<PEM CA bundle>"}` (JSON, from the operator's `registryCAs` setting):
    private certificate authorities, each trusted for its own registry only, in addition to the system's."""
    raw = ((os.environ if env is None else env).get("FOUNDRY_REGISTRY_CAS") or "").strip()
    if not raw:
        return {}
    try:
        cas = json.loads(raw)
    except ValueError:
        raise FetchError("FOUNDRY_REGISTRY_CAS is not JSON") from None
    if not isinstance(cas, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cas.items()):
        raise FetchError("FOUNDRY_REGISTRY_CAS: expected a JSON object of host[:port] to PEM bundle")
    return {k.strip().lower(): v for k, v in cas.items()}


def tls_context(pem=None, where="registry"):
    """The system's trust store, plus the PEM bundle `pem` (a private registry CA) when given. Verification is never
    turned off: a bundle that holds no certificate is an error, not a reason to skip checking."""
    context = ssl.create_default_context()
    if pem:
        try:
            context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:
            raise FetchError(f"{where}: the CA bundle is not a PEM certificate bundle ({exc})") from None
    return context


def _host_port(netloc, default_port):
    parts = urllib.parse.urlsplit(f"//{netloc}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise FetchError(f"{netloc}: not a valid host and port") from None
    return parts.hostname or "", port


def check_host(host, allow_private=False, allowlist=None, resolver=ssrf.system_resolver, default_port=443):
    """The SSRF guard for `host[:port]`; returns the checked addresses to connect to (FetchError when refused)."""
    name, port = _host_port(host, default_port)
    try:
        return ssrf.connect_addresses(name, port, allowlist=_allowlist() if allowlist is None else allowlist,
                                      allow_private=allow_private, resolver=resolver)
    except ssrf.SsrfError as exc:
        message = str(exc)          # ("cannot resolve <host>" stays first: callers fall back to another region on it)
        raise FetchError(message if message.startswith("cannot resolve") or name in message
                         else f"{host}: {message}") from None


def redirect_target(current, location, insecure):
    """Where a redirect from `current` leads, or FetchError: https only (http as well in insecure mode), never from
    https down to http."""
    target = urllib.parse.urljoin(current, location)
    scheme = urllib.parse.urlsplit(target).scheme
    if scheme != "https" and not (scheme == "http" and insecure and urllib.parse.urlsplit(current).scheme == "http"):
        raise FetchError(f"refusing a redirect from {_origin(current)} to {_origin(target)}: "
                         "only https may be followed")
    return target


def _origin(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class Http:
    """GETs for the fetcher. Every connection goes to an address the SSRF guard checked for that very host (each
    redirect hop is checked again, the name is never resolved a second time). TLS is always verified: against the
    system's store, plus, for a registry named in `cas` (FOUNDRY_REGISTRY_CAS), that registry's own CA. At most
    MAX_REDIRECTS redirects are followed, to https only (plain http too in insecure mode, never a downgrade), and the
    registry's credentials go only to the origin they were meant for: a redirect to another host (object storage) is
    followed without them."""

    MAX_REDIRECTS = 5

    def __init__(self, username=None, password=None, insecure=False, allow_private=False, timeout=60,
                 allowlist=None, resolver=ssrf.system_resolver, cas=None):
        self.username, self.password = username, password
        self.cas = registry_cas() if cas is None else {k.lower(): v for k, v in cas.items()}
        self.insecure, self.allow_private, self.timeout = insecure, allow_private, timeout
        self.allowlist = _allowlist() if allowlist is None else allowlist
        self.resolver = resolver
        self.token = None

    def _connection(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not self.insecure):
            raise FetchError(f"{_origin(url)}: only https:// can be fetched")
        if parts.username is not None or parts.password is not None:
            raise FetchError(f"{_origin(url)}: credentials in a URL are not accepted")
        host, port = _host_port(parts.netloc, 443 if parts.scheme == "https" else 80)
        addresses = check_host(parts.netloc, self.allow_private, self.allowlist, self.resolver,
                               443 if parts.scheme == "https" else 80)
        if parts.scheme == "https":
            conn = http_client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls(host, port))
        else:
            conn = http_client.HTTPConnection(host, port, timeout=self.timeout)

        def pinned(address, timeout=None, source_address=None, **_kwargs):
            last = None
            for addr in addresses:               # the checked addresses, in the resolver's order
                try:
                    return socket.create_connection((addr, address[1]), timeout, source_address)
                except OSError as exc:
                    last = exc
            raise last
        conn._create_connection = pinned         # TLS still verifies the certificate against `host` (SNI too)
        return conn, urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))

    def request(self, method, url, headers=None, data=None):
        """One request to an address the SSRF guard checked for the URL's host (pinned: the name is not resolved
        again), sending `headers` as given; no redirect is followed - a 3xx, like a 4xx/5xx, raises HTTPError."""
        conn, path = self._connection(url)
        try:
            conn.request(method, path, body=data, headers={**(headers or {}), "Connection": "close"})
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status >= 300:
            raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, resp)
        return resp

    def _tls(self, host, port):
        """A registry's own CA (FOUNDRY_REGISTRY_CAS) for that host and port only; the system's store elsewhere."""
        named = f"[{host}]" if ":" in host else host
        pem = self.cas.get(f"{named}:{port}") or (self.cas.get(named) if port == 443 else None)
        return tls_context(pem, f"{named}:{port}")

    def _open(self, url, headers, auth=None):
        origin = _origin(url)
        for _hop in range(self.MAX_REDIRECTS + 1):
            conn, path = self._connection(url)
            sent = {**headers, "User-Agent": "foundry-inference-fetcher", "Connection": "close"}
            if auth and _origin(url) == origin:
                sent["Authorization"] = auth
            try:
                conn.request("GET", path, headers=sent)
                resp = conn.getresponse()
            except BaseException:
                conn.close()
                raise
            location = resp.headers.get("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                resp.close()
                conn.close()
                url = redirect_target(url, location, self.insecure)
                continue
            if resp.status >= 400:
                raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, resp)
            return resp
        raise FetchError(f"{origin}: more than {self.MAX_REDIRECTS} redirects")

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
