"""benchmarks/bench_srno.py --table3: the FLOPs beside the paper's Table 3 are the parts' own counts.

Pure arithmetic on meta-device models (no timing), so it is cheap; the timed part is not run here.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_srno


def test_table3_rows_are_the_encoder_and_decoder_counts(tmp_path: Path) -> None:
    output = tmp_path / "table3.json"
    assert bench_srno.main(["--table3", "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    rows = {(row["scale"], row["width"]): row for row in record["rows"]}
    assert len(rows) == 12 and record["paper"]["SRNO"] == [141.28, 62.5, 35.28]
    full_x2 = rows[(2, 1.0)]
    assert full_x2["lr_side"] == 240 and full_x2["out_size"] == [480, 480]
    # EDSR-baseline: 1,218,240 MACs per LR pixel, plus 16 ASE gates (72 -> 128 -> 64) once per image.
    assert full_x2["encoder_flops"] == 2 * (1_218_240 * 240 * 240 + 16 * (72 * 128 + 128 * 64))
    # SRNO's own order: 806,144 MACs per output pixel (FlopCounterMode on the authors' code agrees).
    assert full_x2["srno_order_decoder_flops"] == 2 * 806_144 * 480 * 480
    assert full_x2["decoder_flops_slim"] == full_x2["decoder_flops_paper"]
    assert rows[(2, 0.5)]["decoder_flops_slim"] < rows[(2, 0.5)]["decoder_flops_paper"]
    assert [row["width"] for row in record["rows"] if row["group_width"]] == [0.7, 0.9, 1.0]
