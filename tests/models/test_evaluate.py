"""models/evaluate.py and ``anysr eval``: the benchmark protocol, scoring, summaries, costs and outputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from cli.evaluate import parse_scale_pairs, parse_scales, parse_size, parse_width_modes
from cli.main import main
from models.anysr import AnySR
from models.checkpoint import save_checkpoint
from models.evaluation.evaluate import (
    AUTO,
    BICUBIC,
    EvalProgress,
    degrade,
    evaluate,
    parameters_used,
    quantize,
    row_label,
    scale_label,
    subnet_cost,
    summarise,
    widths_needed,
)
from models.evaluation.metrics import psnr, scored_luma, ssim
from models.flops import count_flops
from models.prefix import used_regions
from models.resize import imresize_uint8
from models.widths import WIDTHS


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    smooth = 120 + 60 * torch.sin(xs / 5 + seed) * torch.cos(ys / 6)
    return (smooth + 30 * torch.rand(3, height, width, generator=generator)).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "Tiny"
    folder.mkdir()
    for index, size in enumerate([(41, 38), (36, 45)]):
        image = synthetic_image(*size, seed=index)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"img{index}.png")
    return folder


# ---- Protocol ----------------------------------------------------------------------------------------------


def test_integer_scale_crops_hr_to_a_multiple_and_uses_matlab_bicubic() -> None:
    image = synthetic_image(41, 38, seed=0)
    hr, lr = degrade(image, (3.0, 3.0))
    assert hr.shape == (3, 39, 36) and torch.equal(hr, image[:, :39, :36])
    assert lr.dtype == torch.uint8 and torch.equal(lr, imresize_uint8(hr, (13, 12)))


def test_fractional_and_non_square_scales_follow_floor_then_round() -> None:
    image = synthetic_image(41, 38, seed=1)
    hr, lr = degrade(image, (2.6, 2.6))  # LR floor(41 / 2.6) = 15, floor(38 / 2.6) = 14; HR round(15 · 2.6) = 39
    assert lr.shape == (3, 15, 14) and hr.shape == (3, 39, 36)
    hr, lr = degrade(image, (1.5, 3.5))  # LR 27 x 10, HR round(40.5) = 40 (half to even) x 35
    assert lr.shape == (3, 27, 10) and hr.shape == (3, 40, 35)
    assert torch.equal(lr, imresize_uint8(hr, (27, 10)))
    hr, lr = degrade(synthetic_image(30, 30, seed=2), (0.1 * 30, 0.1 * 30))  # 3.0000000000000004
    assert lr.shape == (3, 10, 10) and hr.shape == (3, 30, 30)


def test_degrade_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        degrade(synthetic_image(20, 20, seed=0), (0.5, 2.0))
    with pytest.raises(ValueError, match="too small for scale 4"):
        degrade(synthetic_image(3, 20, seed=0), (4.0, 4.0))


def test_quantize_rounds_to_8_bit_levels() -> None:
    values = torch.tensor([-0.1, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.0, 1.2])
    assert (quantize(values) * 255).tolist() == pytest.approx([0, 0, 1, 1, 128, 255, 255])


def test_labels_and_widths_needed() -> None:
    assert scale_label((2.0, 2.0)) == "2" and scale_label((1.1, 1.1)) == "1.1" and scale_label((1.5, 2.5)) == "1.5x2.5"
    assert row_label(0.7) == "w=0.7" and row_label(AUTO) == "auto"
    assert widths_needed([AUTO], (1.5, 1.5)) == [0.5]
    assert widths_needed([AUTO, 1.0], (3.0, 3.0)) == [0.9, 1.0]
    assert widths_needed([AUTO, 1.0], (3.5, 3.5)) == [1.0]  # auto reuses the full-width run
    assert widths_needed([AUTO], (1.5, 2.0)) == [0.7]  # decided by max(s_h, s_w)
    with pytest.raises(ValueError, match="width must be one of"):
        widths_needed([0.6], (2.0, 2.0))


# ---- Scoring -----------------------------------------------------------------------------------------------


def test_bicubic_only_scores_match_a_direct_computation(image_dir: Path) -> None:
    paths = sorted(image_dir.iterdir())
    scores = evaluate(None, {"Tiny": paths}, [(2.0, 2.0), (2.5, 2.5)], [], bicubic=True)
    assert [(score.image, score.scale, score.row) for score in scores] == [
        (path.name, scale, BICUBIC) for path in paths for scale in [(2.0, 2.0), (2.5, 2.5)]
    ]
    image = synthetic_image(36, 45, seed=1)
    hr, lr = degrade(image, (2.5, 2.5))
    upscaled = imresize_uint8(lr, (hr.shape[1], hr.shape[2])).double() / 255
    target = scored_luma(hr.double() / 255, (2.5, 2.5))
    predicted = scored_luma(upscaled, (2.5, 2.5))
    assert scores[3].psnr == psnr(predicted, target) and scores[3].ssim == ssim(predicted, target)
    assert 20 < scores[3].psnr < 40 and 0 < scores[3].ssim < 1 and scores[3].width is None


def test_model_rows_reuse_each_width_once(image_dir: Path, tiny_model: AnySR) -> None:
    paths = sorted(image_dir.iterdir())
    scales = [(1.5, 1.5), (3.5, 3.5), (2.0, 3.0)]
    updates: list[EvalProgress] = []
    scores = evaluate(tiny_model, {"Tiny": paths}, scales, [0.5, 1.0, AUTO], bicubic=True, progress=updates.append)
    # Upscales actually run per image: x1.5 → bicubic, 0.5, 1.0 (auto = 0.5); x3.5 → bicubic, 0.5, 1.0;
    # 2x3 → bicubic, 0.5, 0.9 (auto), 1.0.
    assert [update.done for update in updates] == list(range(1, 21))
    assert {update.total for update in updates} == {20}
    assert len(scores) == len(paths) * len(scales) * 4  # bicubic + three rows
    rows = {(score.image, score.scale, score.row): score for score in scores}
    for path in paths:
        auto_small = rows[(path.name, (1.5, 1.5), "auto")]
        assert auto_small.width == 0.5 and auto_small.psnr == rows[(path.name, (1.5, 1.5), "w=0.5")].psnr
        assert rows[(path.name, (3.5, 3.5), "auto")].psnr == rows[(path.name, (3.5, 3.5), "w=1.0")].psnr
        assert rows[(path.name, (2.0, 3.0), "auto")].width == 0.9

    # One model row recomputed by hand: upscale the MATLAB LR to the HR crop, round to 8 bits, score on Y.
    image = synthetic_image(41, 38, seed=0)
    hr, lr = degrade(image, (2.0, 3.0))
    output = tiny_model.upscale(lr[None].float() / 255, (hr.shape[1], hr.shape[2]), 0.5, (2.0, 3.0))
    predicted = scored_luma(quantize(output[0]), (2.0, 3.0))
    target = scored_luma(hr.double() / 255, (2.0, 3.0))
    score = rows[("img0.png", (2.0, 3.0), "w=0.5")]
    assert score.psnr == pytest.approx(psnr(predicted, target), rel=1e-12)
    assert score.ssim == pytest.approx(ssim(predicted, target), rel=1e-12)


def test_evaluate_needs_a_model_for_width_rows(image_dir: Path) -> None:
    with pytest.raises(ValueError, match="a model is needed"):
        evaluate(None, {"Tiny": sorted(image_dir.iterdir())}, [(2.0, 2.0)], [1.0])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(None, {"Tiny": sorted(image_dir.iterdir())}, [(2.0, 2.0)], [], bicubic=False)


def test_summary_is_the_mean_over_images(image_dir: Path) -> None:
    scores = evaluate(None, {"Tiny": sorted(image_dir.iterdir())}, [(2.0, 2.0), (3.0, 3.0)], [])
    summary = summarise(scores)
    assert [(row.scale, row.row, row.images) for row in summary] == [((2.0, 2.0), BICUBIC, 2), ((3.0, 3.0), BICUBIC, 2)]
    twos = [score for score in scores if score.scale == (2.0, 2.0)]
    assert summary[0].psnr == pytest.approx(sum(score.psnr for score in twos) / 2)
    assert summary[0].ssim == pytest.approx(sum(score.ssim for score in twos) / 2)


def test_costs_count_used_parameters_and_fixed_output_flops(tiny_model: AnySR) -> None:
    total = sum(parameter.numel() for parameter in tiny_model.parameters())
    assert parameters_used(tiny_model, 1.0) == total
    used = [parameters_used(tiny_model, width) for width in WIDTHS]
    assert used == sorted(used) and used[0] < total
    regions = used_regions(tiny_model, 0.5)
    skipped = sum(
        parameter.numel() - sum(parameter[box].numel() for box in regions[name])
        for name, parameter in tiny_model.named_parameters()
        if name in regions
    )
    assert used[0] == total - skipped
    cost = subnet_cost(tiny_model, (3.0, 3.0), 0.7, (64, 64))
    assert cost.flops == count_flops(tiny_model, (21, 21), (64, 64), 0.7).total
    assert cost.parameters == used[1]
    # Same output size at every scale: a larger scale means a smaller LR, hence fewer FLOPs.
    assert (
        subnet_cost(tiny_model, (4.0, 4.0), 1.0, (64, 64)).flops
        < subnet_cost(tiny_model, (2.0, 2.0), 1.0, (64, 64)).flops
    )


# ---- Command line ------------------------------------------------------------------------------------------


def test_parse_scales() -> None:
    assert parse_scales("2,3,4") == [(2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
    grid = parse_scales("1.1:4.0:0.1")
    assert len(grid) == 30 and grid[0] == (1.1, 1.1) and grid[-1] == (4.0, 4.0) and (2.3, 2.3) in grid
    assert parse_scales("2, 1.5:2.5:0.5") == [(2.0, 2.0), (1.5, 1.5), (2.5, 2.5)]  # duplicates dropped
    assert parse_scale_pairs("1.5x2.5, 2X3") == [(1.5, 2.5), (2.0, 3.0)]
    for bad, message in [
        ("0.5", "at least 1.0"),
        ("2:1:0.1", "STOP >= START"),
        ("1:2", "START:STOP:STEP"),
        ("a", "not a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_scales(bad)
    with pytest.raises(ValueError, match="HxW"):
        parse_scale_pairs("2x3x4")


def test_parse_width_modes_and_sizes() -> None:
    assert parse_width_modes("auto") == [AUTO]
    assert parse_width_modes("all") == [*WIDTHS, AUTO]
    assert parse_width_modes("none") == []
    assert parse_width_modes("auto,1.0,0.5") == [0.5, 1.0, AUTO]
    with pytest.raises(ValueError, match=r"width must be one of \(0.5, 0.7, 0.9, 1.0\), got 0.6"):
        parse_width_modes("0.6", WIDTHS)
    # Before the model is loaded only the syntax is checked; a model's own widths then decide.
    assert parse_width_modes("0.8,auto") == [0.8, AUTO]
    assert parse_width_modes("all", (0.7, 0.8, 0.9, 1.0)) == [0.7, 0.8, 0.9, 1.0, AUTO]
    with pytest.raises(ValueError, match=r"a width is a number in \(0, 1\], got '1.5'"):
        parse_width_modes("1.5")
    assert parse_size("256") == (256, 256) and parse_size("128x96") == (128, 96)
    with pytest.raises(ValueError, match="HxW"):
        parse_size("12x")


def test_cli_writes_tables_json_and_plot(
    image_dir: Path, tiny_model: AnySR, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(weights, tiny_model, {"stage": 2, "step": 7})
    out_dir = tmp_path / "eval"
    argv = ["eval", "--weights", str(weights), "--data", str(image_dir), "--scales", "2,3", "--scale-pairs", "1.5x2"]
    code = main([*argv, "--widths", "all", "--out-dir", str(out_dir), "--flops-size", "64", "--threads", "1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "[1/" in captured.err and "Tiny/img0.png x2 bicubic" in captured.err
    markdown = (out_dir / "eval.md").read_text()
    assert markdown == captured.out
    assert "| scale | bicubic | w=0.5 | w=0.7 | w=0.9 | w=1.0 | auto |" in markdown
    assert "| ×1.5x2 |" in markdown and "Table 3 (Tiny)" in markdown and "| w=1.0 (‡) |" in markdown
    assert "| auto (†) |" in markdown and "step 7" in markdown
    record = json.loads((out_dir / "eval.json").read_text())
    assert record["weights"]["training"]["step"] == 7 and record["datasets"] == {"Tiny": ["img0.png", "img1.png"]}
    assert len(record["summary"]) == 3 * 6 and len(record["per_image"]) == 2 * 3 * 6
    assert {row["row"] for row in record["summary"]} == {"bicubic", "w=0.5", "w=0.7", "w=0.9", "w=1.0", "auto"}
    pytest.importorskip("matplotlib")
    assert (out_dir / "psnr_vs_scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--data", str(tmp_path), "--widths", "none"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["eval", "--scales", "0.5", "--widths", "none"]) == 2
    assert "at least 1.0" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["eval", "--data", str(tmp_path), "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_merging_runs_split_by_scale_reproduces_the_single_run(
    image_dir: Path, tiny_model: AnySR, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(weights, tiny_model, {"stage": 2, "step": 3})
    common = ["eval", "--weights", str(weights), "--data", str(image_dir), "--widths", "0.5,auto", "--threads", "1"]
    for name, scales in (("whole", "1.5,3"), ("low", "1.5"), ("high", "3")):
        assert (
            main([*common, "--scales", scales, "--flops-size", "64", "--quiet", "--out-dir", str(tmp_path / name)]) == 0
        )
    capsys.readouterr()
    parts = [str(tmp_path / part / "eval.json") for part in ("low", "high")]
    merge = ["eval", "--weights", str(weights), "--flops-size", "64", "--out-dir", str(tmp_path / "merged"), "--merge"]
    assert main([*merge, *parts]) == 0
    assert "from 2 records" in capsys.readouterr().err
    whole, merged = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("whole", "merged"))
    assert (tmp_path / "merged" / "eval.md").read_text() == (tmp_path / "whole" / "eval.md").read_text()
    assert merged["scales"] == whole["scales"] and merged["datasets"] == whole["datasets"]

    def scores(record: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(row["dataset"], row["label"], row["row"], row["psnr"], row["ssim"]) for row in record["summary"]]

    assert scores(merged) == scores(whole)
    assert len(merged["per_image"]) == len(whole["per_image"])
    assert [run["file"] for run in merged["merged_from"]] == parts and merged["device"] == "cpu"


def test_merge_refuses_records_that_are_not_splits_of_one_run(
    image_dir: Path, tiny_model_factory: Callable[..., AnySR], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_checkpoint(first, tiny_model_factory(), {"stage": 2})
    save_checkpoint(other, tiny_model_factory(seed=1), {"stage": 2})
    for name, path in (("a", first), ("b", other)):
        argv = ["eval", "--weights", str(path), "--data", str(image_dir), "--scales", "2", "--widths", "0.5"]
        assert main([*argv, "--quiet", "--out-dir", str(tmp_path / name)]) == 0
    a, b = str(tmp_path / "a" / "eval.json"), str(tmp_path / "b" / "eval.json")
    capsys.readouterr()
    assert main(["eval", "--weights", str(first), "--merge", a, a]) == 2
    assert "must not overlap" in capsys.readouterr().err
    assert main(["eval", "--weights", str(first), "--merge", a, b]) == 2
    assert "scored weights sha256" in capsys.readouterr().err
    assert main(["eval", "--weights", str(other), "--merge", a]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["eval", "--weights", str(first), "--merge", str(tmp_path / "missing.json")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["eval", "--weights", str(first), "--merge", str(tmp_path / "junk.json")]) == 2
    assert "not an eval.json" in capsys.readouterr().err


# ---- Reference numbers on the real benchmark ---------------------------------------------------------------


@pytest.mark.shared_data
def test_set5_bicubic_matches_the_published_baseline(shared_dir: Path) -> None:
    """Bicubic Set5 ×2/×3/×4 in the literature (MATLAB, Y, shave = scale): 33.66 / 30.39 / 28.42 dB,
    SSIM 0.9299 / 0.8682 / 0.8104. Our float Y (LIIF's convention) reads about 0.01 dB / 0.0005 higher."""
    folder = shared_dir / "datasets" / "Set5"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    summary = summarise(evaluate(None, {"Set5": sorted(folder.glob("*.png"))}, parse_scales("2,3,4"), []))
    assert [round(row.psnr, 2) for row in summary] == pytest.approx([33.66, 30.39, 28.42], abs=0.021)
    assert [row.ssim for row in summary] == pytest.approx([0.9299, 0.8682, 0.8104], abs=0.0012)
