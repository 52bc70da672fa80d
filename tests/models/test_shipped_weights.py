"""The shipped LIIF weights load through the format-1 migration and score what their evaluation recorded.

weights/eval/eval.json holds the per-image Set5 scores measured when the file was made (before the model
zoo existed). Rebuilding the model from the migrated spec must reproduce them: x2 and x4, at full width
and at the scale group's width (auto), every image within 0.01 dB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
