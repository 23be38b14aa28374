"""What the model fetcher's log says, read the same way from an embedded process's log file and from a pod's
container log: its download progress (`progress: <done> of <total> bytes (<pct>%)` lines) and the cause of a failed
run (its `failed: <cause>` line)."""
import re

from .blobcache import format_size

_PROGRESS = re.compile(r"progress: (\d+) of (\d+) bytes \((\d+)%\)")


def progress_numbers(text):
    """(bytes done, bytes total, percent) from the last progress line of `text`, else None."""
    found = _PROGRESS.findall(text or "")
    return tuple(int(v) for v in found[-1]) if found else None


def download_progress(text):
    """'1.2 GiB of 5.0 GiB (24%)' from the last progress line of `text`, else None."""
    found = progress_numbers(text)
    if not found:
        return None
    done, total, pct = found
    return f"{format_size(done)} of {format_size(total)} ({pct}%)"


def failure_cause(text):
    """The cause from the last `failed:` line of `text`, else None."""
    lines = [line for line in (text or "").splitlines() if "failed" in line]
    if not lines:
        return None
    return lines[-1].split("failed:", 1)[-1].strip() or None
