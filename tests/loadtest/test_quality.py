"""PSNR cost per width from an eval JSON: tolerant reading, interpolation over scale, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest.quality import QualityTableError, load_psnr_table


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(data))
    return path


def rows(dataset: str, offset: float = 0.0) -> list[dict[str, Any]]:
    psnr = {(1.0, 2): 36.0, (1.0, 4): 30.0, (0.5, 2): 35.0, (0.5, 4): 29.8, (0.7, 2): 35.6}
    return [{"dataset": dataset, "width": w, "scale": s, "psnr": value + offset} for (w, s), value in psnr.items()]


def test_cost_is_interpolated_and_clamped(tmp_path: Path) -> None:
    table = load_psnr_table(write(tmp_path, rows("Set5")))
    assert table.cost_db(1.0, 3.0) == pytest.approx(0.0)
    assert table.cost_db(0.5, 2.0) == pytest.approx(1.0)
    assert table.cost_db(0.5, 3.0) == pytest.approx(0.6)  # halfway between 1.0 dB and 0.2 dB
    assert table.cost_db(0.5, 8.0) == pytest.approx(0.2)  # beyond the table: nearest scale
    assert table.cost_db(0.7, 3.9) == pytest.approx(0.4)  # one scale only: constant
    assert table.cost_db(0.9, 2.0) is None  # not evaluated
    assert table.widths == [0.5, 0.7, 1.0]


def test_nested_layout_and_datasets(tmp_path: Path) -> None:
    nested = {"model": "x", "results": {"Set5": {"rows": rows("Set5")}, "Set14": rows("Set14", offset=-2.0)}}
    path = write(tmp_path, nested)
    assert load_psnr_table(path).datasets == ["Set14", "Set5"]
    assert load_psnr_table(path).cost_db(0.5, 2.0) == pytest.approx(1.0)
    assert load_psnr_table(path, dataset="Set14").datasets == ["Set14"]


def test_scale_strings_and_psnr_key_variants(tmp_path: Path) -> None:
    data = [
        {"width": "1.0", "scale": "x2", "psnr_y": 34.0},
        {"width": 0.5, "scale": "2", "psnr_db": 33.5},
    ]
    assert load_psnr_table(write(tmp_path, data)).cost_db(0.5, 2.0) == pytest.approx(0.5)


def test_errors_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(QualityTableError, match="has no records with 'width', 'scale'"):
        load_psnr_table(write(tmp_path, {"psnr": 30}))
    with pytest.raises(QualityTableError, match="no full-width"):
        load_psnr_table(write(tmp_path, [{"width": 0.5, "scale": 2, "psnr": 30}]))
    with pytest.raises(QualityTableError, match="for dataset 'Urban100'"):
        load_psnr_table(write(tmp_path, rows("Set5")), dataset="Urban100")
    with pytest.raises(QualityTableError, match="cannot read eval file"):
        load_psnr_table(tmp_path / "missing.json")


def test_anysr_eval_layout(tmp_path: Path) -> None:
    """``anysr eval``'s eval.json: [s_h, s_w] scales, an auto row duplicating a fixed width, a bicubic row
    without width, and per-image rows that must not be mixed with the means."""

    def row(dataset: str, scale: float, name: str, width: float | None, psnr: float) -> dict[str, Any]:
        return {"dataset": dataset, "scale": [scale, scale], "row": name, "width": width, "psnr": psnr}

    summary = [
        row("Set5", 2, "1.0", 1.0, 36.0),
        row("Set5", 2, "0.5", 0.5, 35.0),
        row("Set5", 2, "auto", 0.5, 35.0),
        row("Set5", 2, "bicubic", None, 33.0),
        row("Set14", 2, "1.0", 1.0, 32.0),
        row("Set14", 2, "0.5", 0.5, 31.5),
        {"dataset": "Set5", "scale": [2, 3], "row": "1.0", "width": 1.0, "psnr": 20.0},  # non-square: ignored
    ]
    per_image = [{**row("Set5", 2, "0.5", 0.5, 10.0), "image": "baby.png"}]
    table = load_psnr_table(write(tmp_path, {"protocol": {}, "summary": summary, "per_image": per_image}))
    assert table.cost_db(0.5, 2.0) == pytest.approx((1.0 + 0.5) / 2)
    assert table.cost_db(1.0, 2.0) == 0.0
    only_images = load_psnr_table(
        write(tmp_path, {"per_image": per_image + [{**row("Set5", 2, "1.0", 1.0, 12.0), "image": "b"}]})
    )
    assert only_images.cost_db(0.5, 2.0) == pytest.approx(2.0)
