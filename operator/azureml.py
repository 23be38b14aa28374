"""The public `azureml://` model protocol (no Azure account; the one Foundry Local uses), client side. The fetcher's
download into the shared cache is azureml_fetch.py; this module only speaks to the three services:

1. Registry gateway: `GET {FOUNDRY_AZUREML_REGISTRY_URL}/modelregistry/v1.0/registry/models/nonazureaccount
   ?assetId=<URI, every byte but A-Za-z0-9-_.~ percent-encoded>` with `User-Agent: AzureAiStudio` and no
   Authorization header. The JSON answer's `blobSasUri` is a blob container URL with a SAS query. The region is
   FOUNDRY_AZURE_REGION, else the one the live catalog was synced from, else centralus; a status of 0 (no answer),
   408, 429, 500, 502, 503 or 504 moves on to the next region of FALLBACK_REGIONS.
2. Container listing: `GET <container>?restype=container&comp=list&<sas>` (XML `EnumerationResults`, following
   `NextMarker` pages): each blob's Name, Content-Length and Etag.
3. Blobs: ranged GETs (`Range: bytes=a-b`, `If-Match: <etag>`), retried with exponential backoff; 429 and 503 honour
   `Retry-After`; 412 means the blob changed since it was listed (BlobChanged).

Every host is checked by the fetcher's SSRF guard before it is contacted (the SAS host comes from the gateway's
answer: it is checked too); redirects are not followed; plain http needs FOUNDRY_FETCH_INSECURE=1. SAS queries never
reach a log or an error message (`redact`).
"""
import email.utils
import json
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass
from http.client import HTTPException
from xml.etree import ElementTree

from .fetch_http import FetchError, Http, log

USER_AGENT = "AzureAiStudio"
DEFAULT_REGISTRY_URL = "https://{region}.api.azureml.ms"
DEFAULT_REGION = "centralus"
FALLBACK_REGIONS = ("centralus", "eastus", "eastus2", "westus2", "westus3", "northeurope", "westeurope")
RETRY_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})
URI = re.compile(r"azureml://registries/(?P<registry>[A-Za-z0-9][A-Za-z0-9._-]{0,99})/models/"
                 r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,199})/versions/(?P<version>[A-Za-z0-9][A-Za-z0-9._-]{0,49})")
MAX_LISTING_PAGES = 1000
MAX_PAGE_BYTES = 16 << 20


class BlobChanged(FetchError):
    """The blob's ETag no longer matches the one it was listed with (HTTP 412)."""


@dataclass(frozen=True)
class Asset:
    registry: str
    name: str
    version: str

    @property
    def uri(self):
        return f"azureml://registries/{self.registry}/models/{self.name}/versions/{self.version}"

    @property
    def model_id(self):
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Blob:
    name: str
    size: int
    etag: str


def parse_uri(uri):
    match = URI.fullmatch(str(uri or ""))
    if not match:
        raise FetchError(f"{str(uri)[:200]!r} is not an azureml://registries/<registry>/models/<name>/versions/<v> "
                         "URI")
    return Asset(**match.groupdict())


def encode_asset(uri):
    """Every byte except A-Za-z0-9-_.~ percent-encoded, as the gateway expects."""
    return urllib.parse.quote(uri, safe="")


def redact(url):
    """A URL without its query (a SAS token is a credential)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True)
class AzureSettings:
    registry_url: str = DEFAULT_REGISTRY_URL
    region: str = DEFAULT_REGION
    insecure: bool = False
    allow_private: bool = False
    attempts: int = 6                # per request, before giving up
    backoff_s: float = 1.0           # first retry delay; doubled each time
    max_wait_s: float = 60.0         # the longest Retry-After honoured
    chunk_bytes: int = 2 << 20
    parallel: int = 4
    timeout_s: float = 60.0
    allowlist: frozenset = None      # host[:port] on private addresses admitted (None: FOUNDRY_REGISTRY_ALLOWLIST)

    @classmethod
    def from_env(cls, env=None, insecure=False, allow_private=False, detected_region=None):
        env = os.environ if env is None else env

        def number(name, default, kind=float):
            raw = (env.get(name) or "").strip()
            try:
                return kind(raw) if raw else default
            except ValueError:
                raise FetchError(f"{name}: expected a number, got {raw[:40]!r}") from None
        return cls(registry_url=(env.get("FOUNDRY_AZUREML_REGISTRY_URL") or "").strip() or DEFAULT_REGISTRY_URL,
                   region=(env.get("FOUNDRY_AZURE_REGION") or "").strip().lower() or _region(detected_region),
                   insecure=insecure, allow_private=allow_private,
                   attempts=max(1, number("FOUNDRY_AZUREML_ATTEMPTS", cls.attempts, int)),
                   backoff_s=max(0.0, number("FOUNDRY_AZUREML_BACKOFF_S", cls.backoff_s)),
                   max_wait_s=max(0.0, number("FOUNDRY_AZUREML_MAX_WAIT_S", cls.max_wait_s)),
                   chunk_bytes=max(64 << 10, number("FOUNDRY_AZUREML_CHUNK_BYTES", cls.chunk_bytes, int)),
                   parallel=min(16, max(1, number("FOUNDRY_AZUREML_PARALLEL", cls.parallel, int))))

    def regions(self):
        return list(dict.fromkeys([self.region, *FALLBACK_REGIONS]))


def _region(value):
    value = str(value or "").strip().lower()
    return value if re.fullmatch(r"[a-z0-9]{1,40}", value) else DEFAULT_REGION


def retry_after(headers, default, limit):
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), within [0, limit]."""
    raw = (headers or {}).get("Retry-After") if headers is not None else None
    if not raw:
        return min(default, limit)
    raw = raw.strip()
    if raw.isdigit():
        return min(float(raw), limit)
    try:
        when = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError):
        return min(default, limit)
    return max(0.0, min(when - time.time(), limit))


class Client:
    def __init__(self, settings, sleep=time.sleep):
        self.settings = settings
        self.sleep = sleep
        # connections go to the addresses the SSRF guard checked (no second lookup: no DNS-rebinding window)
        self.http = Http(insecure=settings.insecure, allow_private=settings.allow_private,
                         timeout=settings.timeout_s, allowlist=settings.allowlist)

    def _check(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise FetchError(f"{redact(url)}: not an http(s) URL")
        if parts.scheme == "http" and not self.settings.insecure:
            raise FetchError(f"{redact(url)}: plain http is refused (https only; FOUNDRY_FETCH_INSECURE=1 allows it)")

    def open(self, url, headers=None, method="GET", data=None):
        """One request (no retry, no redirect followed: a 3xx is an HTTPError); the caller closes the response.
        Raises FetchError (refused by the SSRF guard), HTTPError, OSError."""
        self._check(url)
        try:
            return self.http.request(method, url, {**(headers or {}), "User-Agent": USER_AGENT}, data)
        except ssl.SSLCertVerificationError as exc:      # final: no other region or attempt would be trusted
            host = urllib.parse.urlsplit(url).netloc
            raise FetchError(f"{host}: the TLS certificate is not trusted ({exc.verify_message}); a private "
                             "endpoint's CA goes in the chart value registryTrust.caBundles") from None

    def retrying(self, what, attempt_fn):
        """Run `attempt_fn()` until it succeeds, retrying network errors and RETRY_STATUSES with backoff (Retry-After
        honoured). A 4xx other than 408/429 is final."""
        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.attempts + 1):
            try:
                return attempt_fn()
            except urllib.error.HTTPError as exc:
                status, headers, why = exc.code, exc.headers, f"HTTP {exc.code}"
                exc.close()
                if status not in RETRY_STATUSES:
                    raise
            except (urllib.error.URLError, OSError, HTTPException, TransientError) as exc:
                status, headers = 0, None
                why = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            if attempt == self.settings.attempts:
                raise FetchError(f"{what}: {why} (gave up after {attempt} attempts)")
            wait = retry_after(headers, delay, self.settings.max_wait_s) if status in (429, 503) else delay
            log(f"{what}: {why}; retrying in {wait:.1f} s (attempt {attempt + 1} of {self.settings.attempts})")
            self.sleep(wait)
            delay = min(delay * 2, self.settings.max_wait_s)
        raise AssertionError("unreachable")

    # --- 1. registry gateway ---------------------------------------------------------------------------------------
    def lookup(self, asset):
        """(container URL with its SAS query, description or None), trying the regions in turn."""
        failures = []
        for region in self.settings.regions():
            base = self.settings.registry_url.replace("{region}", region).rstrip("/")
            url = f"{base}/modelregistry/v1.0/registry/models/nonazureaccount?assetId={encode_asset(asset.uri)}"
            try:
                with self.open(url, {"Accept": "application/json"}) as resp:
                    body = resp.read(4 << 20)
            except FetchError as exc:
                if not str(exc).startswith("cannot resolve"):
                    raise                                    # refused by the SSRF guard or https-only: final
                failures.append(f"{region}: {exc}")
                log(f"model registry in {region}: {exc}; trying the next region")
                continue
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code in RETRY_STATUSES:
                    failures.append(f"{region}: HTTP {exc.code}")
                    log(f"model registry in {region} answered HTTP {exc.code}; trying the next region")
                    continue
                detail = "not found" if exc.code == 404 else f"HTTP {exc.code}"
                raise FetchError(f"{asset.uri}: the model registry answered {detail}") from None
            except (urllib.error.URLError, OSError, HTTPException) as exc:
                failures.append(f"{region}: {getattr(exc, 'reason', None) or exc}")
                log(f"model registry in {region} did not answer ({failures[-1]}); trying the next region")
                continue
            try:
                doc = json.loads(body)
            except ValueError:
                raise FetchError(f"{asset.uri}: the model registry's answer is not JSON") from None
            sas = doc.get("blobSasUri") if isinstance(doc, dict) else None
            if not isinstance(sas, str) or not sas.startswith(("https://", "http://")):
                raise FetchError(f"{asset.uri}: the model registry's answer has no blobSasUri")
            entity = doc.get("modelEntity") if isinstance(doc.get("modelEntity"), dict) else {}
            description = entity.get("description") if isinstance(entity.get("description"), str) else None
            log(f"{asset.uri}: found in region {region}; container {redact(sas)}")
            return sas, description
        raise FetchError(f"{asset.uri}: no model registry region answered ({'; '.join(failures[-4:])})")

    # --- 2. container listing --------------------------------------------------------------------------------------
    def list_blobs(self, container):
        """Every blob of the container (following NextMarker pages)."""
        parts = urllib.parse.urlsplit(container)
        blobs, marker = [], ""
        for _page in range(MAX_LISTING_PAGES):
            query = "restype=container&comp=list" + (f"&marker={urllib.parse.quote(marker, safe='')}"
                                                       if marker else "") + (f"&{parts.query}" if parts.query else "")
            url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

            def page(url=url):
                with self.open(url, {"Accept": "application/xml", "x-ms-version": "2021-08-06"}) as resp:
                    data = resp.read(MAX_PAGE_BYTES + 1)
                if len(data) > MAX_PAGE_BYTES:
                    raise FetchError(f"{redact(container)}: a listing page is larger than {MAX_PAGE_BYTES} bytes")
                return data
            try:
                data = self.retrying(f"listing {redact(container)}", page)
            except urllib.error.HTTPError as exc:
                raise FetchError(f"listing {redact(container)}: HTTP {exc.code}"
                                 + (" (the SAS token was refused)" if exc.code == 403 else "")) from None
            found, marker = _parse_listing(data, container)
            blobs += found
            if not marker:
                return blobs
        raise FetchError(f"{redact(container)}: the listing has more than {MAX_LISTING_PAGES} pages")

    # --- 3. blobs --------------------------------------------------------------------------------------------------
    def blob_url(self, container, name):
        parts = urllib.parse.urlsplit(container)
        path = parts.path.rstrip("/") + "/" + urllib.parse.quote(name, safe="/")
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    def get_range(self, url, start, end, etag, label, size=None):
        """Bytes start..end (inclusive) of the blob, exactly; retried; BlobChanged when its ETag moved on. With `size`
        (the listing's), a blob whose own length (Content-Range's total) differs fails at once: the size check."""
        want = end - start + 1

        def attempt():
            headers = {"Range": f"bytes={start}-{end}", "x-ms-version": "2021-08-06"}
            if etag:
                headers["If-Match"] = etag
            try:
                resp = self.open(url, headers)
            except urllib.error.HTTPError as exc:
                if exc.code == 412:
                    exc.close()
                    raise BlobChanged(f"{label}: the blob changed while it was being downloaded") from None
                raise
            with resp:
                got = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (resp.headers.get("Content-Range") or "").strip())
                whole = resp.status == 200 and start == 0
                total = got.group(3) if got and resp.status == 206 else (
                    (resp.headers.get("Content-Length") or "").strip() if whole else None)
                if size is not None and total and total.isdigit() and int(total) != size:
                    raise FetchError(f"{label}: size check failed: the blob has {int(total)} bytes, the listing "
                                     f"said {size}")
                if not whole and not (resp.status == 206 and got and int(got.group(1)) == start and
                                      int(got.group(2)) == end):
                    raise TransientError(f"unexpected answer to a range request (HTTP {resp.status}, "
                                         f"Content-Range {(resp.headers.get('Content-Range') or 'none')[:60]!r})")
                data = resp.read(want + 1)
            if len(data) != want:
                raise TransientError(f"the server sent {len(data)} of {want} bytes")
            return data
        try:
            return self.retrying(f"{label} bytes {start}-{end}", attempt)
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{label}: HTTP {exc.code}" + (" (the SAS token was refused or expired)"
                                                             if exc.code == 403 else "")) from None


class TransientError(Exception):
    """A reply that is worth asking for again (a short body, a wrong range)."""


def _parse_listing(data, container):
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise FetchError(f"{redact(container)}: the container listing is not XML ({exc})") from None
    if root.tag != "EnumerationResults":
        raise FetchError(f"{redact(container)}: the container listing is not an EnumerationResults document")
    found = []
    for blob in root.iter("Blob"):
        name = blob.findtext("Name")
        props = blob.find("Properties")
        size = props.findtext("Content-Length") if props is not None else None
        etag = (props.findtext("Etag") if props is not None else None) or ""
        if not name or size is None or not size.strip().isdigit():
            raise FetchError(f"{redact(container)}: a listed blob has no name or size")
        found.append(Blob(name, int(size), etag.strip()))
    return found, (root.findtext("NextMarker") or "").strip()
