"""Small async JSON-over-HTTP helper for the issuer and ARM calls.

The blocking urllib call runs in a dedicated small thread pool so the event loop never waits on the network, and a
slow issuer cannot starve the loop's default executor. Stdlib only: the core stays framework-free.
"""
import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

MAX_RESPONSE_BYTES = 1024 * 1024
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="foundry-auth-http")


class UpstreamUnavailable(Exception):
    """The remote service could not be reached or did not answer with a usable JSON document."""


def _request(url, method, body, headers, timeout):
    data = None
    headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(MAX_RESPONSE_BYTES + 1)
    except (OSError, ValueError) as exc:   # URLError, timeouts, refused connections, bad URLs
        raise UpstreamUnavailable(f"{method} {url}: {exc}") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise UpstreamUnavailable(f"{method} {url}: response larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        document = json.loads(raw) if raw else None
    except ValueError:
        document = None
    return status, document


async def fetch_json(url, *, method="GET", body=None, headers=None, timeout=5.0):
    """(status, parsed JSON or None). Raises UpstreamUnavailable when nothing usable came back."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, _request, url, method, body, headers, timeout)
