"""The autoscaling decision, as pure data over time (no I/O): Knative's KPA rule with a stable and a panic window.

Every period the scaler feeds one sample: the summed in-flight + queued requests of every replica (None when a
replica could not be read: missing data), and whether any request was answered since the last sample.

- Stable mode: replicas = ceil(average concurrency over the stable window / targetConcurrency).
- Panic mode: entered when the panic window's average wants >= panicThreshold x the current replicas; then
  replicas = max(current, ceil(panic average / target)) (never down) until the panic window's wish has stayed below
  the threshold for a whole stable window (as Knative's KPA).
- Down: only to the highest count wanted over the last scaleDownDelaySeconds (Knative's scale-down-delay), only
  when every sample of that window is complete, and never within a stable window of the last scale-up: the count
  changes direction at most once per stable window (no flapping).
- To zero: only with minReplicas 0, after scaleToZeroAfterSeconds with complete samples, zero concurrency and no
  request answered; missing data never scales to zero (nor down), it holds the current count.
"""
import math
from collections import deque


class Policy:
    def __init__(self, params, now):
        self.params = params
        self.samples = deque()           # (time, concurrency or None, complete)
        self.last_activity = now         # a request answered, in flight, or held by the activator
        self.panic_until = None          # time panic mode ends unless renewed
        self.last_missing = None         # time of the last incomplete sample
        self.last_up = None              # time of the last scale-up this policy decided

    def touch(self, now):
        """Activity seen elsewhere (the activator holding a request)."""
        self.last_activity = now

    def observe(self, now, concurrency, answered):
        complete = concurrency is not None
        if not complete:
            self.last_missing = now
        elif concurrency > 0 or answered:
            self.last_activity = now
        self.samples.append((now, concurrency, complete))
        horizon = max(self.params.stable_window_s, self.params.scale_down_delay_s, self.params.scale_to_zero_after_s)
        while self.samples and self.samples[0][0] < now - horizon - self.params.period_s:
            self.samples.popleft()

    def _average(self, now, window):
        values = [c for t, c, ok in self.samples if ok and now - window <= t <= now]
        return sum(values) / len(values) if values else None

    def _wanted(self, average):
        return math.ceil(average / self.params.target_concurrency - 1e-9) if average is not None else None

    def _max_wanted_since(self, now, since):
        """Highest count wanted by the stable average at any sample of the last `since` seconds."""
        best = 0
        for t, _c, _ok in self.samples:
            if t >= now - since:
                best = max(best, self._wanted(self._average(t, self.params.stable_window_s)) or 0)
        return best

    def decide(self, now, current):
        """(replicas, reason) when the count should change, else None. `current` is the count now wanted."""
        p = self.params
        stable, panic = self._average(now, p.stable_window_s), self._average(now, p.panic_window_s)
        if stable is None:
            return None                                  # nothing known yet: hold
        want_stable, want_panic = self._wanted(stable), self._wanted(panic)
        if current > 0 and want_panic is not None and want_panic >= p.panic_threshold * current:
            self.panic_until = now + p.stable_window_s
        if self.panic_until is not None and now >= self.panic_until:
            self.panic_until = None
        if self.panic_until is not None:
            target = p.clamp(max(current, want_panic or 0, 1))
            if target > current:
                self.last_up = now
                return target, (f"panic: {panic:.1f} in flight over {p.panic_window_s:g} s, target "
                                f"{p.target_concurrency} per replica")
            return None
        idle_for = now - self.last_activity
        if (p.scales_to_zero and current > 0 and idle_for >= p.scale_to_zero_after_s and
                (self.last_missing is None or self.last_missing < now - p.scale_to_zero_after_s)):
            return 0, f"idle {idle_for:.0f} s (scaleToZeroAfterSeconds {p.scale_to_zero_after_s:g})"
        target = p.clamp(max(want_stable, 1 if current > 0 or stable > 0 else p.min_replicas))
        if target > current:
            self.last_up = now
            return target, f"load {stable:.1f} in flight over {p.stable_window_s:g} s, target " \
                           f"{p.target_concurrency} per replica"
        if target < current:
            if self.last_missing is not None and self.last_missing >= now - p.scale_down_delay_s:
                return None                               # missing data: never down
            if self.last_up is not None and now - self.last_up < p.stable_window_s:
                return None                               # no reversal within a stable window
            target = p.clamp(max(target, self._max_wanted_since(now, p.scale_down_delay_s), 1))
            if target < current:
                return target, (f"load {stable:.1f} in flight over {p.stable_window_s:g} s for "
                                f"{p.scale_down_delay_s:g} s, target {p.target_concurrency} per replica")
        return None
