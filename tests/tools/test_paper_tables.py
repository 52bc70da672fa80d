"""docs/paper-tables.md is generated: these hold that each number lands in its own cell, from its own file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import paper_tables


def write_eval(directory: Path, name: str, cells: dict[tuple[str, float, str], float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    summary = [{"dataset": d, "scale": [s, s], "row": r, "psnr": v} for (d, s, r), v in cells.items()]
    (directory / name).write_text(json.dumps({"summary": summary}))


@pytest.fixture
def eval_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(paper_tables, "EVAL_DIR", tmp_path)
    return tmp_path


def test_table_5_puts_each_p_in_its_own_row_and_column(eval_dir: Path) -> None:
    cells = {
        (d, float(s), r): 30.0 + i + (0.5 if r == "auto" else 0.0)
        for i, (d, s) in enumerate((d, s) for d in ("Set5", "Set14") for s in (2, 3, 4))
        for r in ("auto", "w=1.0")
    }
    write_eval(eval_dir / "liif-p0.4", "x234.json", cells)
    lines = paper_tables.table_5(paper_tables.rows())
    ours_full = next(line for line in lines if "`liif-p0.4`" in line and "‡" in line)
    ours_sub = next(line for line in lines if "`liif-p0.4`" in line and "†" in line)
    assert ours_full.split(" | ")[2:] == ["30.00", "31.00", "32.00", "33.00", "34.00", "35.00 |"]
    assert ours_sub.split(" | ")[2:] == ["30.50", "31.50", "32.50", "33.50", "34.50", "35.50 |"]
    missing = next(line for line in lines if "`liif-p0.2`" in line and "‡" in line)
    assert missing.count("—") == 6


def test_bicubic_margin_is_the_worst_scale_per_set_and_width(eval_dir: Path) -> None:
    cells = {}
    for scale, gain in ((1.1, 0.4), (2.0, 1.5), (4.0, -0.2)):
        for dataset in ("Set5", "Set14"):
            cells[(dataset, scale, "bicubic")] = 30.0
            cells[(dataset, scale, "auto")] = 30.0 + gain
            cells[(dataset, scale, "w=1.0")] = 30.0 + gain + 0.1
    write_eval(eval_dir / "metasr", "scan.json", cells)
    lines = paper_tables.bicubic_margins(paper_tables.rows())
    line = next(line for line in lines if "`metasr`" in line)
    assert line.count("-0.20 dB at ×4 (3 scales)") == 2
    assert "not scanned" in next(line for line in lines if "`srno`" in line)


def test_seed_spread_is_the_range_of_each_cell_over_the_seeds(eval_dir: Path) -> None:
    assert "fewer than two seeds" in paper_tables.seed_spread()[0]
    for key, offset in (("liif-p0.6", 0.0), ("liif-p0.6-seed12", 0.03), ("liif-p0.6-seed13", -0.05)):
        cells = {
            (d, float(s), r): 32.0 + offset for d in ("Set5", "Set14") for s in (2, 3, 4) for r in ("auto", "w=1.0")
        }
        cells[("Set14", 4.0, "auto")] = 28.0  # one cell that every seed agrees on
        write_eval(eval_dir / key, "x234.json", cells)
    lines = paper_tables.seed_spread()
    full = next(line for line in lines if "‡: range over 3 seeds" in line)
    sub = next(line for line in lines if "†: range over 3 seeds" in line)
    assert full.split(" | ")[1:] == ["0.08"] * 5 + ["0.08 |"]
    assert sub.split(" | ")[1:] == ["0.08"] * 5 + ["0.00 |"]
