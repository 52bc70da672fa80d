"""RDN against the LIIF authors' RDN (yinboc/liif: models/rdn.py, configuration B, no upsampling).

Ours at full width with ASE at identity must compute their backbone; with LIIF on top, their ``liif`` model
on an ``rdn`` encoder. Their RDN runs on inputs normalised to [-1, 1], as LIIF's data pipeline feeds it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.coords import make_cell, make_coord
from models.spec import ModelSpec
from tools.public_code.common import CheckResult, map_state, max_abs_diff, neutral_model
from tools.public_code.liif import public_name as liif_name
from tools.public_code.runner import run_public

REPOSITORY = "yinboc/liif"
LR_SIZE = (12, 14)
OUT_SIZE = (29, 37)

SNIPPET = """
import models
spec = {
    "name": "liif",
    "args": {
        "encoder_spec": {"name": "rdn", "args": {"no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}},
    },
}
model = models.make(spec).eval()
missing, unexpected = model.load_state_dict({k[6:]: v for k, v in inputs.items() if k.startswith("state.")})
with torch.no_grad():
    outputs["features"] = model.gen_feat((inputs["lr"] - 0.5) / 0.5)
    outputs["grid"] = model.query_rgb(inputs["grid_coord"], inputs["grid_cell"]) * 0.5 + 0.5
"""


def public_name(name: str) -> str | None:
    """Our RDN + LIIF names → LIIF's (``encoder.RDBs.i.convs.c.conv.0``, ``encoder.GFF.0``, ...)."""
    if ".ase." in name:
        return None
    parts = name.split(".")
    if parts[0] == "decoder":
        return liif_name(name)
    simple = {"shallow1": "SFENet1", "shallow2": "SFENet2", "global_fusion": "GFF.0", "global_conv": "GFF.1"}
    if parts[1] in simple:
        return f"encoder.{simple[parts[1]]}.{parts[-1]}"
    if parts[1] == "blocks" and parts[3] == "layers":
        return f"encoder.RDBs.{parts[2]}.convs.{parts[4]}.conv.0.{parts[-1]}"
    if parts[1] == "blocks" and parts[3] == "fusion":
        return f"encoder.RDBs.{parts[2]}.LFF.{parts[-1]}"
    raise KeyError(f"no LIIF name for {name}")


def check(repo: Path) -> CheckResult:
    model = neutral_model(ModelSpec.of("rdn", "liif"))
    lr = torch.rand(1, 3, *LR_SIZE, generator=torch.Generator().manual_seed(1))
    scale = torch.tensor([[OUT_SIZE[0] / LR_SIZE[0], OUT_SIZE[1] / LR_SIZE[1]]])
    with torch.no_grad():
        features = model.encoder(lr, 1.0, scale)
    ours_grid = model.upscale(lr, OUT_SIZE, 1.0).flatten(2).transpose(1, 2)
    grid = make_coord(*OUT_SIZE)[None]
    inputs = {"lr": lr, "grid_coord": grid, "grid_cell": make_cell(*OUT_SIZE, grid.shape[1])[None]}
    inputs |= {f"state.{name}": tensor for name, tensor in map_state(model.state_dict(), public_name).items()}
    theirs = run_public(repo, SNIPPET, inputs)
    diff_features, scale_features = max_abs_diff(features, theirs["features"])
    diff_grid, _ = max_abs_diff(ours_grid, theirs["grid"].clamp(0, 1))
    return CheckResult(
        part="rdn",
        repository=REPOSITORY,
        files=("models/rdn.py", "models/liif.py", "models/mlp.py"),
        case=f"RDN (B: 16 blocks x 8 layers, growth 64) features and RDN + LIIF on the {OUT_SIZE[0]}x{OUT_SIZE[1]} "
        f"grid, LR {LR_SIZE[0]}x{LR_SIZE[1]}, width 1.0, ASE at identity",
        max_abs_diff=max(diff_features, diff_grid),
        output_scale=scale_features,
        notes=(f"features {diff_features:.1e} (up to {scale_features:.2f}), RDN + LIIF grid {diff_grid:.1e}",),
    )
