"""SRNO on EDSR-baseline against the SRNO authors' code (2y7c3/Super-Resolution-Neural-Operator:
models/sronet.py ``SRNO.query_rgb``, models/galerkin.py ``simple_attn``, models/edsr.py).

Theirs concatenates the whole ensemble per output pixel and runs the lift and attention on the whole grid;
ours moves the lift's feature part to LR pixels and, in inference, decodes in chunks after one accumulation
pass per attention layer, with each layer's attention folded into one matrix. Both our paths are compared:
the differentiable whole-grid render (training) and the chunked grid decoding (inference, clamped as
``upscale`` returns it). The AnySR authors' rebuild (CrispyFeSo4/AnySR: models/sronet.py, galerkin.py) has
the same decoder code; it changes the encoder only, so running SRNO's own repository checks the decoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.coords import make_cell, make_coord
from models.flops import count_flops
from models.spec import ModelSpec
from tools.public_code.common import CheckResult, map_state, max_abs_diff, neutral_model
from tools.public_code.liif import public_name as liif_public_name
from tools.public_code.runner import run_public

REPOSITORY = "2y7c3/Super-Resolution-Neural-Operator"
LR_SIZE = (12, 14)
#: A non-integer, non-square scale, and an integer one (×3), where shifted queries land on cell borders.
OUT_SIZES = ((29, 37), (36, 42))

SNIPPET = """
import types
# Imported by their utils.py for training and plotting only; query_rgb uses none of them.
for _name in ("cv2", "torchvision", "torchvision.transforms", "matplotlib", "matplotlib.pyplot"):
    sys.modules[_name] = types.ModuleType(_name)
sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
sys.modules["torchvision.transforms"].InterpolationMode = None
sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
import models
spec = {
    "name": "sronet",
    "args": {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}}, "width": 256, "blocks": 16},
}
model = models.make(spec).eval()
own = model.state_dict()
state = {}
for key, value in inputs.items():
    if key.startswith("state."):
        name = key[6:]
        # Ours holds 1x1 convolutions as Linear weights and the per-head norms as (heads, d): same order.
        assert value.numel() == own[name].numel(), (name, value.shape, own[name].shape)
        state[name] = value.reshape(own[name].shape)
missing, unexpected = model.load_state_dict(state, strict=False)
# EDSR's mean-shift layers exist but SRNO's forward never runs them (its data are normalised instead).
assert not unexpected and all("_mean." in key for key in missing), (missing, unexpected)
with torch.no_grad():
    model.gen_feat((inputs["lr"] - 0.5) / 0.5)
    for index in range(int(inputs["cases"])):
        coord, cell = inputs[f"coord{index}"], inputs[f"cell{index}"]
        outputs[f"rgb{index}"] = model.query_rgb(coord, cell) * 0.5 + 0.5
    # What their whole forward costs, as FlopCounterMode counts it (first case, first image).
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        model(((inputs["lr"] - 0.5) / 0.5)[:1], inputs["coord0"][:1], inputs["cell0"][:1])
    outputs["flops0"] = torch.tensor(counter.get_total_flops(), dtype=torch.float64)
"""


def public_name(name: str) -> str | None:
    """Our EDSR-baseline + SRNO names → SRNO's (``conv00``, ``conv{i}.qkv_proj``, ``conv{i}.kln``, ``fc1``)."""
    if name.startswith("encoder."):
        return liif_public_name(name)
    parts = name.split(".")
    if parts[:2] == ["decoder", "lift"]:
        return f"conv00.{parts[2]}"
    if parts[:2] == ["decoder", "layers"]:
        module = {"qkv": "qkv_proj", "k_norm": "kln", "v_norm": "vln", "out1": "o_proj1", "out2": "o_proj2"}[parts[3]]
        return f"conv{parts[2]}.{module}.{parts[4]}"
    if parts[0] == "decoder" and parts[1] in ("fc1", "fc2"):
        return f"{parts[1]}.{parts[2]}"
    raise KeyError(f"no SRNO name for {name}")


def check(repo: Path) -> CheckResult:
    model = neutral_model(ModelSpec.of("edsr-baseline", "srno"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Per-head norm gains away from 1, so a head's affine applied to the wrong head would show.
        for name, param in model.named_parameters():
            if name.endswith("_norm.weight"):
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
    lr = torch.rand(2, 3, *LR_SIZE, generator=generator)
    inputs = {"lr": lr, "cases": torch.tensor(len(OUT_SIZES))}
    inputs |= {f"state.{name}": tensor for name, tensor in map_state(model.state_dict(), public_name).items()}
    ours_render, ours_grid = [], []
    for index, (out_h, out_w) in enumerate(OUT_SIZES):
        coord = make_coord(out_h, out_w).view(1, out_h, out_w, 2).expand(2, -1, -1, -1)
        cell = make_cell(out_h, out_w, 2)
        inputs[f"coord{index}"], inputs[f"cell{index}"] = coord.contiguous(), cell
        scale = (out_h / LR_SIZE[0], out_w / LR_SIZE[1])
        with torch.no_grad():
            rendered = model(
                lr, coord.reshape(2, -1, 2), cell[:, None].expand(2, out_h * out_w, 2), 1.0, scale, grid=(out_h, out_w)
            )
        ours_render.append(rendered.transpose(1, 2).reshape(2, 3, out_h, out_w))
        ours_grid.append(model.upscale(lr, (out_h, out_w), 1.0))
    theirs = run_public(repo, SNIPPET, inputs)
    render_diffs, grid_diffs, scales = [], [], []
    for index in range(len(OUT_SIZES)):
        diff, magnitude = max_abs_diff(ours_render[index], theirs[f"rgb{index}"])
        render_diffs.append(diff)
        grid_diffs.append(max_abs_diff(ours_grid[index], theirs[f"rgb{index}"].clamp(0, 1))[0])
        scales.append(magnitude)
    sizes = " and ".join(f"{h}x{w}" for h, w in OUT_SIZES)
    their_flops = int(theirs["flops0"])
    our_flops = count_flops(model, LR_SIZE, OUT_SIZES[0], 1.0).total
    return CheckResult(
        part="srno",
        repository=REPOSITORY,
        files=("models/sronet.py", "models/galerkin.py", "models/edsr.py"),
        case=f"EDSR-baseline + SRNO (width 256, 16 heads), 2 LR images {LR_SIZE[0]}x{LR_SIZE[1]} to the "
        f"{sizes} grids, width 1.0, ASE at identity",
        max_abs_diff=max(render_diffs + grid_diffs),
        output_scale=max(scales),
        notes=(
            "render (training path) " + ", ".join(f"{d:.1e}" for d in render_diffs),
            "grid decoding (chunked, folded, clamped) " + ", ".join(f"{d:.1e}" for d in grid_diffs),
            f"FLOPs of one {OUT_SIZES[0][0]}x{OUT_SIZES[0][1]} image: theirs {their_flops:,} (FlopCounterMode on "
            f"their forward), ours {our_flops:,} (models.flops: chunked passes, folded attention)",
        ),
    )
