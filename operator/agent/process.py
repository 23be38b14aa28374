"""One supervised local process: started in its own session (so its whole process group can be signalled), told by
the kernel to die with the agent thread that started it (PR_SET_PDEATHSIG on Linux: no orphans even if the agent is
killed hard), restarted with exponential backoff when it exits, stopped with SIGTERM then SIGKILL."""
import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Process:
    def __init__(self, name, argv, env, cwd, log_path, backoff_base=1.0, backoff_max=60.0, clock=time.monotonic):
        self.name, self.argv, self.env, self.cwd, self.log_path = name, list(argv), dict(env), cwd, log_path
        self.backoff_base, self.backoff_max, self.clock = backoff_base, backoff_max, clock
        self.proc = None
        self.restarts = 0           # exits since the last healthy run (drives the backoff)
        self.total_restarts = 0     # every exit since the agent started it (a kubelet's restartCount)
        self.last_exit = None
        self.started_at = None
        self._next_start = 0.0
        self._stopped = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        os.makedirs(self.cwd, exist_ok=True)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} start {self.name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        except OSError as exc:
            self.proc = None
            self.last_exit = f"cannot start: {exc.strerror or exc}"
            self.restarts += 1
            self._schedule_restart()
        finally:
            log.close()
        self.started_at = self.clock()

    def _schedule_restart(self):
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, self.restarts - 1))
        self._next_start = self.clock() + delay

    def supervise(self):
        """Start it if due (first start, or a restart after backoff); returns True while it runs."""
        if self._stopped:
            return False
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.last_exit = f"exited with {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
            self.proc = None
            self.total_restarts += 1
            # a process that ran for a while before dying starts its backoff afresh
            if self.started_at is not None and self.clock() - self.started_at > 5 * self.backoff_max:
                self.restarts = 0
            self.restarts += 1
            self._schedule_restart()
        if self.proc is None and self.clock() >= self._next_start:
            self.start()
        return self.running()

    def stop(self, timeout=10.0):
        """SIGTERM the whole process group, SIGKILL what is left after `timeout`."""
        self._stopped = True
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # stragglers of the group (workers), or a leader that ignored TERM
        except ProcessLookupError:
            pass
        proc.wait()

    def log_tail(self, size=2000):
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - size))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""
