"""Unpacked model files shared by deployments: beside the blob cache, `<cache>/files/sha256/<hex>` holds one copy of
each model file by content, and every deployment's model folder holds hard links to it. Two deployments of one
model (or of two models with files in common) therefore use the disk once for their unpacked files, not once each.

- A fetch unpacks into its staging folder as always, then each verified file is swapped for a link to the shared
  copy (or becomes the shared copy when there is none). Every step is a link or a rename: a concurrent fetcher, or
  a crash, never leaves a half-written shared file, and no lock is needed.
- An existing shared copy is re-hashed before it is linked to: a corrupted one is replaced by the fresh file.
  Deployments still linked to the corrupted inode see it at their next start (their recorded digests no longer
  match) and fetch again, getting the good copy.
- A shared file no deployment links any more (link count 1) is removed at the next fetch.
- Where a hard link is impossible (another file system, a file system without links) the deployment keeps its own
  copy: sharing saves space, it is never required.
"""
import contextlib
import errno
import os

from .blobcache import format_size, sha256_file

_NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


class FileStore:
    def __init__(self, root, log=print):
        self.dir = os.path.join(os.path.abspath(root), "files", "sha256")
        self.log = log

    def path(self, hexd):
        return os.path.join(self.dir, hexd)

    def prune(self):
        """Remove shared files no deployment links any more; returns the bytes freed."""
        freed = 0
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.dir, name)
            try:
                st = os.lstat(path)
                if st.st_nlink == 1:
                    os.unlink(path)
                    freed += st.st_size
            except FileNotFoundError:
                continue
        return freed

    def share(self, folder, digests):
        """Swap each file of `folder` (relative path -> verified sha256 hex) for a hard link to its shared copy.
        Returns the bytes the folder no longer takes on its own."""
        os.makedirs(self.dir, exist_ok=True)
        freed = self.prune()
        if freed:
            self.log(f"model files store: removed {format_size(freed)} no deployment uses any more")
        saved = 0
        for rel, hexd in digests.items():
            try:
                saved += self._share_one(os.path.join(folder, rel), hexd)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                self.log(f"{rel}: cannot be hard-linked here ({exc.strerror}); this deployment keeps its own copy")
                return saved
        if saved:
            self.log(f"model files shared with other deployments: {format_size(saved)} not stored twice")
        return saved

    def _share_one(self, path, hexd):
        shared = self.path(hexd)
        for _attempt in range(3):
            try:
                same = os.path.samefile(path, shared)
            except FileNotFoundError:
                same = False
            if same:
                return 0
            if not os.path.exists(shared):
                try:
                    os.link(path, shared)                 # this file becomes the shared copy
                    return 0
                except FileExistsError:
                    continue                              # another fetcher was first: use theirs
            if sha256_file(shared).hexdigest() != hexd:
                self.log(f"shared copy sha256:{hexd[:12]} does not match its digest; replacing it")
                self._replace(shared, path)
                return 0
            tmp = f"{path}.link-{os.getpid()}"
            try:
                os.link(shared, tmp)
            except FileNotFoundError:
                continue                                  # pruned in between: start over
            os.replace(tmp, path)
            return os.stat(path).st_size
        return 0

    def _replace(self, shared, path):
        tmp = f"{shared}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(path, tmp)
        os.replace(tmp, shared)
