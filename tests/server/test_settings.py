"""server/settings.py: env prefix, init kwargs over env, validation messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import DEFAULT_WEIGHTS, Settings


def test_defaults_are_valid_and_documented():
    settings = Settings()
    assert settings.weights == DEFAULT_WEIGHTS
    assert settings.policy == "adaptive"
    assert settings.widths is None  # all of the loaded model's widths
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_env_prefix_and_init_kwargs_win(monkeypatch):
    monkeypatch.setenv("ANYSR_PORT", "9100")
    monkeypatch.setenv("ANYSR_WIDTHS", "1.0,0.5")
    monkeypatch.setenv("ANYSR_TILE_HALO", "none")
    monkeypatch.setenv("ANYSR_INPUT_FORMATS", "PNG, webp")
    monkeypatch.setenv("ANYSR_SHARED_DIR", "/somewhere")  # other ANYSR_ variables are not settings
    settings = Settings()
    assert settings.port == 9100
    assert settings.widths == (0.5, 1.0)
    assert settings.tile_halo is None
    assert settings.input_formats == ("png", "webp")
    assert Settings(port=9200).port == 9200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"widths": "1.5"}, r"widths must be numbers in \(0, 1\]"),
        ({"widths": ""}, "at least one"),
        ({"policy": "greedy"}, "policy must be"),
        ({"policy": "fixed:0.7", "widths": "0.5,1.0"}, "outside the served widths"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"tile_size": 4}, "greater than or equal to 8"),
        ({"max_batch_tiles": 0}, "greater than or equal to 1"),
        ({"moderate_utilisation": 0.9, "heavy_utilisation": 0.8}, "must be below heavy_utilisation"),
        ({"moderate_utilisation": None}, "both be set or both be none"),
        ({"moderate_queue_s": 3.0}, "must be below heavy_queue_s"),
        ({"overload_queue_s": 2.0}, "must be above heavy_queue_s"),
        ({"max_scale": 1.0}, "greater than 1"),
        ({"min_scale": 2.0, "max_scale": 1.5}, "must be greater than min_scale"),
        ({"input_formats": "png,gif"}, "subset of"),
        ({"device": "tpu"}, "device must be"),
        ({"max_output_pixels": 10, "max_input_pixels": 100}, "at least max_input_pixels"),
        ({"hysteresis": 1.0}, "less than 1"),
        ({"no_such_setting": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_values_name_the_problem(overrides, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)


def test_fixed_policy_is_normalised():
    assert Settings(policy=" Fixed:0.7 ").policy == "fixed:0.7"


def test_batch_size_defaults_by_device_and_an_explicit_setting_wins():
    from server.app import batch_limits

    assert batch_limits(Settings(), "cpu").max_tiles == 1  # no batching gain on CPU, only memory
    assert batch_limits(Settings(), "cuda").max_tiles == 8
    assert batch_limits(Settings(max_batch_tiles=4), "cpu").max_tiles == 4
    assert batch_limits(Settings(max_batch_tiles=2), "cuda").max_tiles == 2
