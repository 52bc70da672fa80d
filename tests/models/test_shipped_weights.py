"""The shipped LIIF weights load through the format-1 migration and score what their evaluation recorded.

weights/eval/eval.json holds the per-image Set5 scores measured when the file was made (before the model
zoo existed). Rebuilding the model from the migrated spec must reproduce them: x2 and x4, at full width
and at the scale group's width (auto), every image within 0.01 dB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.evaluation.evaluate import AUTO, evaluate
from models.images import list_images

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights" / "anysr-edsr-liif.safetensors"
RECORD = REPO / "weights" / "eval" / "eval.json"


@pytest.mark.weights
@pytest.mark.shared_data
@pytest.mark.slow
def test_shipped_weights_score_as_recorded_on_set5(shared_dir: Path) -> None:
    record = json.loads(RECORD.read_text())
    model, info = load_checkpoint(WEIGHTS)
    assert info.sha256 == record["weights"]["sha256"], "the evaluation record is of another file"
    recorded = {
        (item["image"], tuple(item["scale"]), item["row"]): item["psnr"]
        for item in record["per_image"]
        if item["dataset"] == "Set5"
    }
    paths = list_images([shared_dir / "datasets" / "Set5"])
    scores = evaluate(model, {"Set5": paths}, [(2.0, 2.0), (4.0, 4.0)], [1.0, AUTO], bicubic=False)
    assert len(scores) == len(paths) * 2 * 2
    for score in scores:
        expected = recorded[(score.image, score.scale, score.row)]
        assert score.psnr == pytest.approx(expected, abs=0.01), (score.image, score.scale, score.row)


ROWS = sorted((REPO / "weights" / "rows").glob("*.safetensors"))


@pytest.mark.weights
@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("path", ROWS, ids=[path.stem for path in ROWS])
def test_paper_row_weights_score_as_their_evaluation_recorded(path: Path, shared_dir: Path) -> None:
    """Each trained row of docs/paper-tables.md: its evaluation is of this very file, and the first Set5
    image at x2 (the scale group's width) reproduces the recorded score. The record was made in bf16, so
    the tolerance is bf16's (measured worst dataset-mean delta 0.0065 dB; per image a little more)."""
    record = json.loads((REPO / "weights" / "rows" / "eval" / path.stem / "x234.json").read_text())
    model, info = load_checkpoint(path)
    assert info.sha256 == record["weights"]["sha256"], "the evaluation record is of another file"
    mode = AUTO if "auto" in record["rows"] else 1.0
    row = "auto" if mode is AUTO else "w=1.0"
    image = list_images([shared_dir / "datasets" / "Set5"])[0]
    [score] = evaluate(model, {"Set5": [image]}, [(2.0, 2.0)], [mode], bicubic=False, compute_dtype=torch.bfloat16)
    [expected] = [
        item["psnr"]
        for item in record["per_image"]
        if item["dataset"] == "Set5"
        and item["image"] == image.name
        and item["scale"] == [2.0, 2.0]
        and item["row"] == row
    ]
    assert score.psnr == pytest.approx(expected, abs=0.02)
