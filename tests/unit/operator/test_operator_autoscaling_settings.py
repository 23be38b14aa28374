"""The operator settings' `autoscaling` section: defaults, and a bad value stops the start naming the setting."""
import pytest

from foundry_inference.operator import settings as settings_mod

pytestmark = pytest.mark.unit


def test_defaults_and_overrides():
    assert settings_mod.from_mapping({}).autoscaling.targetConcurrency == 4
    got = settings_mod.from_mapping({"autoscaling": {"targetConcurrency": 2, "holdTimeoutSeconds": 30}}).autoscaling
    assert got.targetConcurrency == 2 and got.holdTimeoutSeconds == 30.0 and got.stableWindowSeconds == 60.0


@pytest.mark.parametrize("raw, named", [
    ({"targetConcurrency": 0}, "autoscaling.targetConcurrency"),
    ({"targetConcurrency": "4"}, "autoscaling.targetConcurrency"),
    ({"targetConcurrency": 2.5}, "autoscaling.targetConcurrency"),
    ({"maxHeldRequests": -1}, "autoscaling.maxHeldRequests"),
    ({"panicWindowSeconds": 90, "stableWindowSeconds": 60}, "autoscaling.panicWindowSeconds"),
    ({"surprise": 1}, "surprise"),
    ([1], "autoscaling"),
])
def test_bad_values_name_the_setting(raw, named):
    with pytest.raises(settings_mod.SettingsError) as exc:
        settings_mod.from_mapping({"autoscaling": raw})
    assert named in str(exc.value)
