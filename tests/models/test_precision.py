"""models/precision.py: auto precision measures instead of assuming, and explains itself."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models import precision
from models.anysr import AnySR
from models.precision import (
    MIN_AGREEMENT_DB,
    MIN_SPEEDUP,
    PROBE_ROUNDS,
    choose_precision,
    probe_bf16,
    probe_image,
)

CPU = torch.device("cpu")


def fake_cpu(monkeypatch: pytest.MonkeyPatch, flags: list[str], probe: dict[str, Any] | None = None) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: flags)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: bool(flags))
    if probe is not None:
        monkeypatch.setattr(precision, "probe_bf16", lambda model, device: dict(probe))


def test_explicit_precisions_pass_and_bad_ones_are_refused(tiny_model: AnySR) -> None:
    for name in ("fp32", "bf16"):
        choice = choose_precision(tiny_model, CPU, name)
        assert (choice.precision, choice.reason, choice.dtype) == (name, "requested", precision.DTYPES[name])
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        choose_precision(tiny_model, CPU, "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision(tiny_model, CPU, "int8")


def test_auto_is_bf16_on_cuda_without_probing(tiny_model: AnySR, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "probe_bf16", lambda *args: pytest.fail("no probe on CUDA"))
    assert choose_precision(tiny_model, torch.device("cuda", 0)).precision == "bf16"


def test_auto_keeps_fp32_on_a_cpu_without_native_bf16(tiny_model: AnySR, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch, [], probe={"speedup": 3.0, "agreement_db": 70.0})
    choice = choose_precision(tiny_model, CPU)
    assert choice.precision == "fp32" and "no native bf16" in choice.reason and choice.probe == {}


@pytest.mark.parametrize(
    ("speedup", "agreement", "expected", "words"),
    [
        (2.6, 66.0, "bf16", "2.60x fp32's speed, within 66.0 dB"),
        (MIN_SPEEDUP - 0.05, 70.0, "fp32", "not faster enough"),
        (3.0, MIN_AGREEMENT_DB - 1.0, "fp32", "not close enough to fp32"),
    ],
)
def test_auto_on_a_bf16_cpu_follows_the_probe(
    tiny_model: AnySR,
    monkeypatch: pytest.MonkeyPatch,
    speedup: float,
    agreement: float,
    expected: str,
    words: str,
) -> None:
    fake_cpu(monkeypatch, ["avx512_bf16"], probe={"speedup": speedup, "agreement_db": agreement})
    choice = choose_precision(tiny_model, CPU)
    assert choice.precision == expected and words in choice.reason
    assert choice.probe["cpu_flags"] == ["avx512_bf16"]


def test_the_probe_measures_both_precisions_on_a_structured_image(
    tiny_model: AnySR, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[torch.dtype] = []
    upscale = tiny_model.upscale

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs["compute_dtype"])
        return upscale(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "upscale", counted)
    result = probe_bf16(tiny_model, CPU)
    # One untimed run each, then alternating rounds, so a burst of other work cannot fall on one precision only.
    assert calls == [torch.float32, torch.bfloat16] * (1 + PROBE_ROUNDS) and result["rounds"] == PROBE_ROUNDS
    assert result["fp32_s"] > 0 and result["bf16_s"] > 0 and result["speedup"] > 0
    assert 20.0 < result["agreement_db"] < 200.0  # bf16 differs from fp32, by little
    image = probe_image(16, CPU)
    assert image.shape == (1, 3, 16, 16) and 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.1  # structure, not a flat field
