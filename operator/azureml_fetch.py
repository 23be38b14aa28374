"""Fetch an `azureml://` model (the protocol is azureml.py) into the shared content-addressed cache (blobcache.py),
then make the model folder from it.

- Asset index: `<cache>/assets/<registry>/<name>/<version>.json` records, for each file of the model, its size, the
  ETag it was listed with and the sha256 of the verified download. A model whose index is complete and whose blobs
  are still cached and still match their sha256 is used without any network request (a second deployment, an
  offline `foundry-inference models import`, a restart). The index is written after each file, so a crash keeps
  what was finished.
- Each missing file is downloaded with ranged GETs of FOUNDRY_AZUREML_CHUNK_BYTES (2 MiB) chunks, a few in
  parallel (FOUNDRY_AZUREML_PARALLEL, 4), into `partial/sha256/<key>.partial`, `<key>` being the sha256 of
  "<asset URI>\\n<file name>"; `<key>.state` records the ETag and how many leading chunks are written, so an
  interrupted download resumes there. A blob whose ETag changes (412 to If-Match) restarts from byte 0 with the new
  listing, at most 3 times. A finished file is hashed and renamed to `blobs/sha256/<sha256>`: from then on it is
  one more cached blob (size limit, least-recently-used eviction, verified at each use).
- The model folder: every listed blob is taken except `*inference_model.json`; a name that is absolute or holds
  `..` is refused before anything is downloaded, and so is a model larger than the cache limit or the model volume.
  The folder that holds `genai_config.json` (the shallowest; the root when there is none) becomes the model folder;
  its files are hard links to the cached blobs (copies where links are impossible), and `inference_model.json`
  (`{"Name": "<name>:<version>", "PromptTemplate": ...}`) is written beside them, as Foundry Local does.
- Progress: `progress: <done> of <total> bytes (<pct>%)` lines on stderr (every 5% or 10 s), which the embedded node
  agent turns into the deployment's status message.
"""
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import posixpath
import shutil
import threading
import time

from . import azureml
from .blobcache import HEX, CacheError, FileLock, format_size, sha256_file
from .fetch_http import FetchError, log

INDEX_DIR = "assets"
MAX_ETAG_RESTARTS = 3
_NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


# --- the asset index ----------------------------------------------------------------------------------------------
def index_path(cache, asset):
    return os.path.join(cache.root, INDEX_DIR, asset.registry, asset.name, f"{asset.version}.json")


def read_index(cache, asset):
    try:
        with open(index_path(cache, asset)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {"uri": asset.uri, "files": {}, "complete": False}
    files = doc.get("files") if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else {}
    files = {name: entry for name, entry in files.items() if isinstance(entry, dict) and
             HEX.fullmatch(str(entry.get("sha256"))) and isinstance(entry.get("size"), int)}
    return {**doc, "uri": asset.uri, "files": files, "complete": bool(doc.get("complete"))}


def write_index(cache, asset, index):
    path = index_path(cache, asset)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as fh:
        json.dump(index, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def partial_key(asset, name):
    return hashlib.sha256(f"{asset.uri}\n{name}".encode()).hexdigest()


# --- choosing the files -------------------------------------------------------------------------------------------
def check_name(name):
    """A blob name as a safe relative path inside the model folder, or FetchError."""
    if not name or "\\" in name or "\0" in name or name.startswith("/") or len(name) > 1024:
        raise FetchError(f"blob name {name[:200]!r} would escape the model folder")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FetchError(f"blob name {name[:200]!r} would escape the model folder")
    return name


def wanted(blobs):
    """The blobs a model is made of: all but `*inference_model.json`, names checked, no duplicates."""
    result, seen = [], set()
    for blob in blobs:
        check_name(blob.name)
        if blob.name.endswith("inference_model.json") or blob.name in seen:
            continue
        seen.add(blob.name)
        result.append(blob)
    if not result:
        raise FetchError("the model's container holds no files")
    return result


def model_root(names):
    """The folder (relative, '' for the root) holding genai_config.json: the shallowest one, else the root."""
    folders = [posixpath.dirname(n) for n in names if posixpath.basename(n) == "genai_config.json"]
    return min(folders, key=lambda f: (f.count("/") if f else -1, f)) if folders else ""


def inference_model(asset, prompt_template=None):
    return {"Name": asset.model_id, "PromptTemplate": prompt_template}


# --- progress -----------------------------------------------------------------------------------------------------
class Progress:
    def __init__(self, total, done=0):
        self.total, self.done = total, done
        self._lock = threading.Lock()
        self._last_pct, self._last_time = -5, 0.0
        self.report(force=True)

    def add(self, n):
        with self._lock:
            self.done += n
            self.report()

    def finish(self):
        if self._last_pct < 100:
            self.report(force=True)

    def report(self, force=False):
        pct = int(self.done * 100 / self.total) if self.total else 100
        if force or pct >= self._last_pct + 5 or time.monotonic() - self._last_time > 10:
            log(f"progress: {self.done} of {self.total} bytes ({pct}%)")
            self._last_pct, self._last_time = pct, time.monotonic()


# --- one blob -----------------------------------------------------------------------------------------------------
class BlobDownload:
    def __init__(self, client, cache, container, asset, blob, progress):
        self.client, self.cache, self.container, self.asset = client, cache, container, asset
        self.blob, self.progress = blob, progress
        self.key = partial_key(asset, blob.name)
        self.state_path = os.path.join(cache.partials, f"{self.key}.state")
        self.added = 0                # bytes counted in `progress` by this attempt

    def _count(self, n):
        self.added += n
        self.progress.add(n)

    def _state(self):
        try:
            with open(self.state_path) as fh:
                state = json.load(fh)
            if os.path.getsize(self.cache.partial(self.key)) == self.blob.size and \
                    state.get("etag") == self.blob.etag and state.get("size") == self.blob.size and \
                    state.get("chunk") == self.client.settings.chunk_bytes and isinstance(state.get("chunks"), int):
                return state["chunks"]
        except (OSError, ValueError, AttributeError):
            pass
        return 0

    def _save(self, chunks):
        tmp = f"{self.state_path}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"etag": self.blob.etag, "size": self.blob.size, "chunk": self.client.settings.chunk_bytes,
                       "chunks": chunks}, fh)
        os.replace(tmp, self.state_path)

    def discard(self):
        for path in (self.cache.partial(self.key), self.state_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def run(self):
        """Download (or resume) the blob; returns its sha256 hex once it is a cached blob."""
        blob, chunk = self.blob, self.client.settings.chunk_bytes
        count = -(-blob.size // chunk)
        done = min(self._state(), count)
        if done:
            log(f"{blob.name}: resuming the download at byte {done * chunk} of {blob.size}")
            self._count(min(done * chunk, blob.size))
        elif os.path.exists(self.cache.partial(self.key)):
            self.discard()
        url = self.client.blob_url(self.container, blob.name)
        fd = os.open(self.cache.partial(self.key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, blob.size)
            self._save(done)
            finished, lock = set(), threading.Lock()

            def one(index):
                start = index * chunk
                end = min(blob.size, start + chunk) - 1
                data = self.client.get_range(url, start, end, blob.etag, blob.name, blob.size)
                os.pwrite(fd, data, start)
                self._count(len(data))
                return index

            with concurrent.futures.ThreadPoolExecutor(self.client.settings.parallel) as pool:
                pending, nxt = set(), done
                while nxt < count or pending:
                    while nxt < count and len(pending) < self.client.settings.parallel * 2:
                        pending.add(pool.submit(one, nxt))
                        nxt += 1
                    ready, pending = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED")
                    try:
                        for future in ready:
                            finished.add(future.result())
                    except BaseException:
                        for future in pending:
                            future.cancel()
                        raise
                    with lock:
                        before = done
                        while done in finished:
                            done += 1
                        if done != before:
                            self._save(done)
            os.fsync(fd)
        finally:
            os.close(fd)
        return self._commit()

    def _commit(self):
        path = self.cache.partial(self.key)
        if os.path.getsize(path) != self.blob.size:
            self.discard()
            raise FetchError(f"{self.blob.name}: the downloaded file is not {self.blob.size} bytes")
        hexd = sha256_file(path).hexdigest()
        os.replace(path, self.cache.blob(hexd))
        for leftover in (self.state_path, os.path.join(self.cache.partials, f"{self.key}.size")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        return hexd


# --- the whole model ----------------------------------------------------------------------------------------------
def _cached_files(cache, index, blobs):
    """{name: sha256 hex} of the listed blobs the index knows (same size and ETag) whose cached copy verifies."""
    found = {}
    for blob in blobs:
        entry = index["files"].get(blob.name)
        if entry and entry["size"] == blob.size and (not blob.etag or entry.get("etag") == blob.etag) and \
                cache.verified(entry["sha256"]):
            found[blob.name] = entry["sha256"]
    return found


def _offline(cache, asset):
    """The model's files from a complete index whose blobs all verify, without the network; None otherwise."""
    index = read_index(cache, asset)
    if not index["complete"] or not index["files"]:
        return None
    hexes = {entry["sha256"] for entry in index["files"].values()}
    with cache.holding(hexes):
        if all(cache.verified(h) for h in hexes):
            return {name: entry["sha256"] for name, entry in index["files"].items()}
    log(f"{asset.uri}: the cached copy is incomplete or corrupted; downloading what is missing")
    return None


def download(asset, cache, settings, room_check=None):
    """Make sure every file of the model is a verified cached blob; returns {name: sha256 hex}."""
    client = azureml.Client(settings)
    container, description = client.lookup(asset)
    blobs = wanted(client.list_blobs(container))
    total = sum(b.size for b in blobs)
    log(f"{asset.uri}: {len(blobs)} files, {format_size(total)}")
    if room_check:
        room_check(total)
    cache.check_fits(total, "model")
    keys = {partial_key(asset, b.name) for b in blobs}
    with cache.holding(keys):                     # one fetcher per model at a time: the next one finds it cached
        held, locked = [], set(keys)

        def hold(hexd):
            if hexd not in locked:                # cached blobs are not evicted while this fetch uses them
                lock = FileLock(os.path.join(cache.locks, f"{hexd}.lock"))
                lock.acquire()
                held.append(lock)
                locked.add(hexd)
        try:
            index = read_index(cache, asset)      # read with the locks held: another fetcher may just have finished
            for entry in index["files"].values():
                hold(entry["sha256"])
            done = _cached_files(cache, index, blobs)
            missing = [b for b in blobs if b.name not in done]
            sizes = {partial_key(asset, b.name): b.size for b in missing}
            sizes.update({done[b.name]: b.size for b in blobs if b.name in done})
            cache.reserve(sizes, [partial_key(asset, b.name) for b in missing], "model")
            index = {"uri": asset.uri, "description": description, "complete": False,
                     "files": {name: index["files"][name] for name in done}}
            write_index(cache, asset, index)
            progress = Progress(sum(b.size for b in missing)) if missing else None
            for blob in missing:
                hexd = _download_blob(client, cache, container, asset, blob, progress)
                hold(hexd)
                index["files"][blob.name] = {"size": blob.size, "etag": blob.etag, "sha256": hexd}
                write_index(cache, asset, index)
                done[blob.name] = hexd
            index["complete"] = True
            write_index(cache, asset, index)
            if progress is not None:
                progress.finish()
        finally:
            for lock in held:
                lock.release()
    if not missing:
        log(f"{asset.uri}: every file already cached and verified: nothing downloaded")
    return done


def _download_blob(client, cache, container, asset, blob, progress):
    for restart in range(MAX_ETAG_RESTARTS + 1):
        job = BlobDownload(client, cache, container, asset, blob, progress)
        try:
            return job.run()
        except azureml.BlobChanged as exc:
            job.discard()
            if restart == MAX_ETAG_RESTARTS:
                raise FetchError(f"{exc} (it kept changing: {MAX_ETAG_RESTARTS + 1} attempts)") from None
            fresh = {b.name: b for b in client.list_blobs(container)}.get(blob.name)
            if fresh is None:
                raise FetchError(f"{blob.name}: the blob disappeared while it was being downloaded") from None
            log(f"{blob.name}: the blob changed during the download (ETag {blob.etag} -> {fresh.etag}); "
                "downloading it again from the start")
            progress.total += fresh.size - blob.size
            progress.done -= min(progress.done, job.added)
            blob = fresh
    raise AssertionError("unreachable")


def place(cache, files, dest, room, asset, prompt_template=None):
    """Link the model folder's files (those under the genai_config.json folder) into `dest` from the cache."""
    root = model_root(files)
    chosen = {name: hexd for name, hexd in files.items()
              if not root or name.startswith(root + "/")}
    room.check(sum(os.path.getsize(cache.blob(h)) for h in chosen.values()))
    for name, hexd in sorted(chosen.items()):
        rel = name[len(root) + 1:] if root else name
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        source = cache.blob(hexd)
        room.take(os.path.getsize(source), "needs")
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            shutil.copyfile(source, target)
    with open(os.path.join(dest, "inference_model.json"), "w") as fh:
        json.dump(inference_model(asset, prompt_template), fh, indent=2)
    if root:
        log(f"model folder: {root}/ (the folder holding genai_config.json)")


def fetch(artifact, dest, cache, room, settings):
    """The fetcher's `azureml://` artifact: {"type": "uri", "uri": "azureml://...", "promptTemplate"?}."""
    asset = azureml.parse_uri(artifact.get("uri"))
    try:
        for attempt in (1, 2):
            files = _offline(cache, asset)
            if files is not None:
                log(f"{asset.uri}: cached ({len(files)} files, verified): not downloaded")
            else:
                files = download(asset, cache, settings, room.check)
            with cache.holding(set(files.values())):          # no eviction while the folder is linked
                if all(os.path.isfile(cache.blob(h)) for h in files.values()):
                    place(cache, files, dest, room, asset, artifact.get("promptTemplate"))
                    return
            if attempt == 2:
                raise FetchError(f"{asset.uri}: cached files keep being evicted (is the model cache limit too small "
                                 "for the models in use?)")
            log(f"{asset.uri}: a cached file was evicted meanwhile; checking the cache again")
    except CacheError as exc:
        raise FetchError(str(exc)) from None
