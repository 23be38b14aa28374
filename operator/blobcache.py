"""The model fetcher's content-addressed cache of OCI layer blobs, shared by every fetcher on a machine (the
directory FOUNDRY_FETCH_CACHE names; the embedded node agent uses `<data-dir>/cache`).

Layout:
- `blobs/sha256/<hex>`: a complete blob. It only ever gets there by a rename after its sha256 digest verified, and it
  is verified again at each use (a corrupted blob is deleted and fetched again); its mtime is touched on each use,
  which is what least-recently-used eviction goes by.
- `partial/sha256/<hex>.partial`: a download in progress or interrupted; the next fetch resumes from its length.
  With a limit, `<hex>.size` beside it holds the blob's declared size: a partial download counts toward the cache's
  usage at that size from the moment space is reserved for it.
- `locks/<hex>.lock`: `fcntl.flock`-ed (exclusive) by the fetcher using that blob, from before its digest is checked
  until the model is unpacked, so two fetchers of one blob never write it at once (the second waits, then finds it
  cached) and eviction never removes a blob in use; `locks/cache.lock` is held while space is reserved.

With a limit (FOUNDRY_FETCH_CACHE_LIMIT_BYTES), an artifact larger than the limit fails at once, before anything is
written; otherwise the least-recently-used blobs and abandoned partial downloads that no fetcher holds are evicted
until the artifact fits, and when even that is not enough the fetch fails with the same kind of clear message.
"""
import contextlib
import fcntl
import hashlib
import os
import re
import time

from .compare import quantity

_CHUNK = 1 << 20
HEX = re.compile(r"[0-9a-f]{64}")
_MAX_SIZE = 1 << 60


class CacheError(Exception):
    pass


def parse_size(value, what="size"):
    """'20Gi', '500Mi', '1G', '1048576' (a Kubernetes quantity) -> a whole number of bytes, at least 1."""
    text = str(value).strip()
    if re.fullmatch(r"[0-9.]+\s*([KMGTPE]i?)B", text):     # 20GiB, 500MB: as people write them
        text = text[:-1].replace(" ", "")
        text = text[:-1] + "k" if text[-1] == "K" else text
    number = quantity(text)
    if number is None or not 1 <= number <= _MAX_SIZE:          # the bound also keeps 1e999999999 from hanging int()
        raise ValueError(f"{what}: expected a size such as 20Gi, 500Mi or a number of bytes, got {value!r}")
    return int(number)


def format_size(n):
    """Bytes for a person: '1.5 GiB (1610612736 bytes)'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def sha256_file(path):
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            sha.update(chunk)
    return sha


class FileLock:
    """An exclusive flock on `path` that survives the file being unlinked by another holder (re-opened if so)."""

    def __init__(self, path):
        self.path, self.fd = path, None

    def acquire(self, blocking=True):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)                  # the holder before us removed it: lock the file that is there now

    def release(self, unlink=False):
        if self.fd is None:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


class BlobCache:
    def __init__(self, root, limit=None, log=print):
        self.root, self.limit, self.log = os.path.abspath(root), limit, log
        self.blobs = os.path.join(self.root, "blobs", "sha256")
        self.partials = os.path.join(self.root, "partial", "sha256")
        self.locks = os.path.join(self.root, "locks")

    def blob(self, hexd):
        return os.path.join(self.blobs, hexd)

    def partial(self, hexd):
        return os.path.join(self.partials, f"{hexd}.partial")

    def _declared(self, hexd):
        return os.path.join(self.partials, f"{hexd}.size")

    def _lock(self, name):
        return FileLock(os.path.join(self.locks, f"{name}.lock"))

    def check_fits(self, total, label):
        """Fail at once when the artifact alone is larger than the limit (nothing written yet)."""
        if self.limit is not None and total > self.limit:
            raise CacheError(f"{label} needs {format_size(total)} but the model cache limit is "
                             f"{format_size(self.limit)}")

    @contextlib.contextmanager
    def holding(self, hexes):
        """Hold the locks of these blobs (sorted, so overlapping fetchers cannot deadlock) for the whole block."""
        for directory in (self.blobs, self.partials, self.locks):
            os.makedirs(directory, exist_ok=True)
        held = []
        try:
            for hexd in sorted(set(hexes)):
                lock = self._lock(hexd)
                if not lock.acquire(blocking=False):
                    self.log(f"sha256:{hexd[:12]}: another fetcher is using this blob; waiting for it")
                    lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in held:
                lock.release()

    def verified(self, hexd):
        """True when the blob is cached and still matches its digest (its use is recorded); a corrupted blob is
        deleted. Call with the blob's lock held."""
        path = self.blob(hexd)
        if not os.path.isfile(path):
            return False
        if sha256_file(path).hexdigest() != hexd:
            self.log(f"cached blob sha256:{hexd[:12]} does not match its digest (corrupted on disk); deleting it "
                     "and fetching it again")
            os.unlink(path)
            return False
        os.utime(path)
        return True

    # --- space -----------------------------------------------------------------------------------------------------
    def _entries(self):
        """{hex: (bytes counted, last use)} for every blob and partial download in the cache."""
        entries = {}

        def add(hexd, size, mtime):
            old = entries.get(hexd, (0, 0.0))
            entries[hexd] = (old[0] + size, max(old[1], mtime))

        for name in _listdir(self.blobs):
            if HEX.fullmatch(name):
                st = _stat(self.blob(name))
                if st:
                    add(name, st.st_size, st.st_mtime)
        for name in _listdir(self.partials):
            hexd, _, ext = name.partition(".")
            if not HEX.fullmatch(hexd) or ext not in ("partial", "size"):
                continue
            if ext == "size" and (os.path.exists(self.partial(hexd)) or os.path.exists(self.blob(hexd))):
                continue                  # counted with its partial download; or left over from a finished one
            st = _stat(self.partial(hexd))
            add(hexd, max(st.st_size if st else 0, self._read_declared(hexd)), st.st_mtime if st else 0.0)
        return entries

    def _read_declared(self, hexd):
        try:
            with open(self._declared(hexd)) as fh:
                return max(0, int(fh.read().strip() or 0))
        except (OSError, ValueError):
            return 0

    def _evict(self, hexd):
        """Remove an entry no fetcher holds; False when one does."""
        lock = self._lock(hexd)
        if not lock.acquire(blocking=False):
            return False
        try:
            for path in (self.blob(hexd), self.partial(hexd), self._declared(hexd)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            lock.release(unlink=True)
        return True

    def reserve(self, sizes, missing, label):
        """Make room for an artifact whose layers are `sizes` ({hex: bytes}, their locks held by the caller), of which
        `missing` are to be downloaded: evict unused blobs, least recently used first, then record the downloads'
        declared sizes so that concurrent fetchers count them."""
        if self.limit is None:
            return
        total = sum(sizes.values())
        self.check_fits(total, label)
        lock = self._lock("cache")
        lock.acquire()
        try:
            others = {h: e for h, e in self._entries().items() if h not in sizes}
            used = sum(size for size, _ in others.values())
            for hexd, (size, mtime) in sorted(others.items(), key=lambda item: item[1][1]):
                if used + total <= self.limit:
                    break
                if self._evict(hexd):
                    used -= size
                    self.log(f"evicted sha256:{hexd[:12]} from the model cache to make room: {format_size(size)}, "
                             f"last used {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(mtime))}")
            if used + total > self.limit:
                raise CacheError(f"{label} needs {format_size(total)} but the model cache limit is "
                                 f"{format_size(self.limit)} and {format_size(used)} of it is in use by other "
                                 "fetches")
            for hexd in missing:
                tmp = f"{self._declared(hexd)}.tmp-{os.getpid()}"
                with open(tmp, "w") as fh:
                    fh.write(str(sizes[hexd]))
                os.replace(tmp, self._declared(hexd))
        finally:
            lock.release()

    # --- downloads -------------------------------------------------------------------------------------------------
    def resume_offset(self, hexd, size):
        """How much of the blob a previous download left (0 when nothing usable: a partial longer than the blob is
        discarded)."""
        st = _stat(self.partial(hexd))
        if st is None:
            return 0
        if st.st_size > size:
            self.log(f"sha256:{hexd[:12]}: the partial download is longer than the blob; discarding it")
            self.discard(hexd, keep_reservation=True)
            return 0
        return st.st_size

    def discard(self, hexd, keep_reservation=False):
        paths = [self.partial(hexd)] + ([] if keep_reservation else [self._declared(hexd)])
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def commit(self, hexd):
        """The verified partial download becomes the cached blob (atomically)."""
        with open(self.partial(hexd), "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.partial(hexd), self.blob(hexd))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._declared(hexd))
        return self.blob(hexd)


def _listdir(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _stat(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
