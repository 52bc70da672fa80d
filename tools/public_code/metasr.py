"""Meta-SR on EDSR-baseline against LIIF's Meta-SR baseline (yinboc/liif: models/misc.py, edsr.py, mlp.py).

LIIF's ``metasr`` model is the compact form of Meta-SR's meta-upscale that the LIIF paper compares against:
per query an MLP 3 → 256 → C·9·3 predicts a filter that is applied to the 3×3-unfolded features of the LR
pixel under the output pixel's corner. Ours contracts the filter's last layer with the features once per
LR pixel (a convolution) and decodes output grids block by block; theirs runs the MLP and the filter per
query. Both run on random queries (random cells too) and on a whole output grid, in float32; the random
queries run once more in float64 on both sides, which tells float rounding (the untrained filters make
outputs of magnitude ~3, so float32 differs by ~1e-6) from a difference in the function (none: ~1e-15).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from models.spec import ModelSpec
from tools.public_code.common import CheckResult, map_state, max_abs_diff, neutral_model, query_inputs
from tools.public_code.liif import public_name as edsr_public_name
from tools.public_code.runner import run_public

REPOSITORY = "yinboc/liif"
LR_SIZE = (12, 14)
#: A non-integer scale on both axes (2.42 × 2.64), so corners fall on both sides of LR pixel borders.
OUT_SIZE = (29, 37)

SNIPPET = """
import models
spec = {"name": "metasr", "args": {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}}}}
model = models.make(spec).eval()
state = {key[6:]: value for key, value in inputs.items() if key.startswith("state.")}
missing, unexpected = model.load_state_dict(state, strict=False)
# EDSR's mean-shift layers exist but LIIF's forward never runs them (its data are normalised instead).
assert not unexpected and all("_mean." in key for key in missing), (missing, unexpected)
with torch.no_grad():
    model.gen_feat((inputs["lr"] - 0.5) / 0.5)
    for name in ("points", "grid"):
        outputs[name] = model.query_rgb(inputs[name + "_coord"], inputs[name + "_cell"]) * 0.5 + 0.5

# The same random queries in float64, to tell rounding from a difference in the function. query_rgb builds
# the LR pixel corners with utils.make_coord, which computes in float32 whatever the model's dtype; so for
# this run only, misc's reference to it is pointed at the same centres computed in float64.
import models.misc


def make_coord_float64(shape, flatten=True):
    axes = [-1 + (2 * torch.arange(size, dtype=torch.float64) + 1) / size for size in shape]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return centres.view(-1, centres.shape[-1]) if flatten else centres


models.misc.make_coord = make_coord_float64
model = model.double()
with torch.no_grad():
    model.gen_feat((inputs["lr"].double() - 0.5) / 0.5)
    outputs["points64"] = model.query_rgb(inputs["points_coord"].double(), inputs["points_cell"].double()) * 0.5 + 0.5
"""


def public_name(name: str) -> str | None:
    """Our EDSR-baseline + Meta-SR names → LIIF's (the encoder as for LIIF; ``decoder.mlp.layers.i`` → ``imnet``)."""
    parts = name.split(".")
    if parts[:3] == ["decoder", "mlp", "layers"]:
        return f"imnet.layers.{2 * int(parts[3])}.{parts[4]}"
    return edsr_public_name(name)


def check(repo: Path) -> CheckResult:
    model = neutral_model(ModelSpec.of("edsr-baseline", "metasr"))
    inputs = query_inputs(LR_SIZE, OUT_SIZE)
    lr, points, point_cells = inputs["lr"], inputs["points_coord"], inputs["points_cell"]
    scale = (OUT_SIZE[0] / LR_SIZE[0], OUT_SIZE[1] / LR_SIZE[1])
    with torch.no_grad():
        ours_points = model(lr, points, point_cells, 1.0, scale)
    ours_grid = model.upscale(lr, OUT_SIZE, 1.0).flatten(2).transpose(1, 2)
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        ours_points64 = model64(lr.double(), points.double(), point_cells.double(), 1.0, scale)
    inputs |= {f"state.{name}": tensor for name, tensor in map_state(model.state_dict(), public_name).items()}
    theirs = run_public(repo, SNIPPET, inputs)
    diff_points, scale_points = max_abs_diff(ours_points, theirs["points"])
    diff_grid, scale_grid = max_abs_diff(ours_grid, theirs["grid"].clamp(0, 1))
    diff_points64, _ = max_abs_diff(ours_points64, theirs["points64"])
    unclamped = float(theirs["grid"].abs().max())
    return CheckResult(
        part="metasr",
        repository=REPOSITORY,
        files=("models/misc.py", "models/edsr.py", "models/mlp.py"),
        case=f"EDSR-baseline + Meta-SR (3 -> 256 -> 64*9*3), LR {LR_SIZE[0]}x{LR_SIZE[1]}, 500 random queries "
        f"and the {OUT_SIZE[0]}x{OUT_SIZE[1]} grid, width 1.0, ASE at identity",
        max_abs_diff=max(diff_points, diff_grid),
        output_scale=max(scale_points, scale_grid),
        notes=(
            f"random queries {diff_points:.1e}, whole grid (our grid decoder, clamped) {diff_grid:.1e}",
            f"the untrained outputs reach {max(scale_points, unclamped):.2f} before clamping",
            f"the random queries in float64 on both sides: {diff_points64:.1e} (so the float32 difference is rounding)",
        ),
    )
