"""The autoscaling parameters of one Deployment, resolved against the operator settings and carried on the child
Deployment as the annotation `foundry.azure.com/autoscaling` (JSON), so the component that scales (the embedded
node's autoscaler) needs neither the owner nor the settings file."""
import json
from dataclasses import asdict, dataclass

ANNOTATION = "foundry.azure.com/autoscaling"


@dataclass(frozen=True)
class ScalingParams:
    min_replicas: int
    max_replicas: int
    target_concurrency: int
    scale_down_delay_s: float
    scale_to_zero_after_s: float
    period_s: float
    stable_window_s: float
    panic_window_s: float
    panic_threshold: float
    max_held: int
    hold_timeout_s: float

    @property
    def scales_to_zero(self):
        return self.min_replicas == 0

    def clamp(self, replicas):
        return min(self.max_replicas, max(self.min_replicas, int(replicas)))

    def to_annotation(self):
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def resolve(autoscaling, settings):
    """spec.autoscaling (operator.spec.Autoscaling) with the settings' defaults filled in."""
    a = settings.autoscaling

    def pick(value, default):
        return default if value is None else value
    return ScalingParams(
        min_replicas=autoscaling.min_replicas, max_replicas=autoscaling.max_replicas,
        target_concurrency=pick(autoscaling.target_concurrency, a.targetConcurrency),
        scale_down_delay_s=float(pick(autoscaling.scale_down_delay_s, a.scaleDownDelaySeconds)),
        scale_to_zero_after_s=float(pick(autoscaling.scale_to_zero_after_s, a.scaleToZeroAfterSeconds)),
        period_s=a.periodSeconds, stable_window_s=a.stableWindowSeconds, panic_window_s=a.panicWindowSeconds,
        panic_threshold=a.panicThreshold, max_held=a.maxHeldRequests, hold_timeout_s=a.holdTimeoutSeconds)


def of_deployment(deployment):
    """The parameters on a child Deployment, or None (fixed replicas, or an annotation that does not parse)."""
    raw = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        found = json.loads(raw)
        params = ScalingParams(**{k: found[k] for k in ScalingParams.__dataclass_fields__})
    except (ValueError, TypeError, KeyError):
        return None
    numbers = [getattr(params, k) for k in ScalingParams.__dataclass_fields__]
    if not all(isinstance(n, int | float) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return None
    if params.max_replicas < max(1, params.min_replicas) or params.target_concurrency <= 0 or params.period_s <= 0:
        return None
    return params
