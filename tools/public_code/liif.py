"""LIIF on EDSR-baseline against the LIIF authors' code (yinboc/liif: models/liif.py, edsr.py, mlp.py).

Ours reorders LIIF's first MLP layer into a per-LR-pixel convolution and decodes output grids separably;
theirs runs the whole 580-input MLP per query. Both run on random queries and on a whole output grid.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.spec import ModelSpec
from tools.public_code.common import CheckResult, map_state, max_abs_diff, neutral_model, query_inputs
from tools.public_code.runner import run_public

REPOSITORY = "yinboc/liif"
LR_SIZE = (12, 14)
OUT_SIZE = (29, 37)

SNIPPET = """
import models
spec = {
    "name": "liif",
    "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}},
    },
}
model = models.make(spec).eval()
state = {key[6:]: value for key, value in inputs.items() if key.startswith("state.")}
missing, unexpected = model.load_state_dict(state, strict=False)
# EDSR's mean-shift layers exist but LIIF's forward never runs them (its data are normalised instead).
assert not unexpected and all("_mean." in key for key in missing), (missing, unexpected)
with torch.no_grad():
    model.gen_feat((inputs["lr"] - 0.5) / 0.5)
    for name in ("points", "grid"):
        outputs[name] = model.query_rgb(inputs[name + "_coord"], inputs[name + "_cell"]) * 0.5 + 0.5
"""


def public_name(name: str) -> str | None:
    """Our EDSR-baseline + LIIF names → LIIF's (``encoder.body.i.body.0`` for conv1, ``imnet.layers.2j``)."""
    if ".ase." in name:
        return None
    parts = name.split(".")
    if parts[:2] == ["encoder", "head"]:
        return f"encoder.head.0.{parts[2]}"
    if parts[:2] == ["encoder", "blocks"]:
        conv = {"conv1": 0, "conv2": 2}[parts[3]]
        return f"encoder.body.{parts[2]}.body.{conv}.{parts[4]}"
    if parts[:2] == ["encoder", "tail"]:
        return f"encoder.body.16.{parts[2]}"
    if parts[:3] == ["decoder", "mlp", "layers"]:
        return f"imnet.layers.{2 * int(parts[3])}.{parts[4]}"
    raise KeyError(f"no LIIF name for {name}")


def check(repo: Path) -> CheckResult:
    model = neutral_model(ModelSpec())
    inputs = query_inputs(LR_SIZE, OUT_SIZE)
    lr, points, point_cells = inputs["lr"], inputs["points_coord"], inputs["points_cell"]
    scale = (OUT_SIZE[0] / LR_SIZE[0], OUT_SIZE[1] / LR_SIZE[1])
    with torch.no_grad():
        ours_points = model(lr, points, point_cells, 1.0, scale)
    ours_grid = model.upscale(lr, OUT_SIZE, 1.0).flatten(2).transpose(1, 2)
    inputs |= {f"state.{name}": tensor for name, tensor in map_state(model.state_dict(), public_name).items()}
    theirs = run_public(repo, SNIPPET, inputs)
    diff_points, scale_points = max_abs_diff(ours_points, theirs["points"])
    diff_grid, scale_grid = max_abs_diff(ours_grid, theirs["grid"].clamp(0, 1))
    return CheckResult(
        part="liif",
        repository=REPOSITORY,
        files=("models/liif.py", "models/edsr.py", "models/mlp.py"),
        case=f"EDSR-baseline + LIIF (4 x 256), LR {LR_SIZE[0]}x{LR_SIZE[1]}, 500 random queries and the "
        f"{OUT_SIZE[0]}x{OUT_SIZE[1]} grid, width 1.0, ASE at identity",
        max_abs_diff=max(diff_points, diff_grid),
        output_scale=max(scale_points, scale_grid),
        notes=(f"random queries {diff_points:.1e}, whole grid (our grid decoder, clamped) {diff_grid:.1e}",),
    )
