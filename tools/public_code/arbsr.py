"""ArbSR's modules against the authors' code (The-Learning-And-Vision-Atelier-LAVA/ArbSR: model/arbrcan.py).

ArbSR's public model is ArbRCAN, and we have no RCAN backbone, so the two plug-ins are compared on the same
features (random, 64 channels, as EDSR-baseline gives them at full width):

- the scale-aware upsampler: their ``SA_upsample`` followed by their tail convolution against our
  ``arbsr`` grid decode (``prepare`` + the chunked grid decoder), at an asymmetric integer scale so that
  their ``round(h·s)`` grid and ours coincide. Their code was written for PyTorch 1.1, whose
  ``F.grid_sample`` default was align_corners=True (which its (w - 1) normalisation assumes); the snippet
  runs it that way. Their offsets are unbounded; the mapped weights keep ours inside the ±max_offset clamp,
  where the two functions are the same, and the check asserts that they stay inside;
- a scale-aware feature adaption block: their ``SA_adapt`` in eval mode, BatchNorm with random running
  statistics, against our adaption block with those statistics folded into its per-channel affine layers.

Both tail outputs are mapped to [0, 1] the same way (``· 0.5 + 0.5``), as our encoders' [-1, 1] units are.

The comparison runs twice. As published (float32): the upsampler difference grows with the feature size,
because their (w - 1)-normalised sampling grid loses position bits in float32. With their code in float64
(``Tensor.float`` made ``double`` in their process) on a power-of-two output grid, where our float32
coordinates are exact too: what remains is our own float32 arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from models.coords import make_cell, make_coord
from models.decoders.arbsr import AdaptionBlock, ArbSRDecoder, ChannelAffine, Prepared
from models.spec import ModelSpec
from tools.public_code.common import CheckResult, max_abs_diff, neutral_model
from tools.public_code.runner import run_public

REPOSITORY = "The-Learning-And-Vision-Atelier-LAVA/ArbSR"
#: LR feature size, and the (s_h, s_w) of the upsampler check (integer, so both grids are round(h·s)).
FEATURE_SIZE = (10, 12)
UPSAMPLE_SCALE = (2, 3)
#: The float64 run: a 32 × 32 output, whose float32 coordinates -1 + (2i + 1)/32 are exact.
FLOAT64_FEATURE_SIZE = (16, 8)
FLOAT64_UPSAMPLE_SCALE = (2, 4)
#: The adaption block's scale only routes its experts, so any scale works: a non-integer, asymmetric one.
ADAPT_SCALE = (1.7, 2.9)
BATCHNORM_EPS = 1e-5

SNIPPET = """
import torch.nn.functional as F
from model import arbrcan

if bool(inputs["float64"]):
    # Their module builds its coordinates with .float(): make every float64 instead.
    torch.set_default_dtype(torch.float64)
    torch.Tensor.float = lambda self, *args, **kwargs: self.double()
    inputs = {key: value.double() if value.is_floating_point() else value for key, value in inputs.items()}

# PyTorch 1.1's grid_sample (align_corners=True), which arbrcan.grid_sample's (w - 1) normalisation assumes.
_grid_sample = F.grid_sample
F.grid_sample = lambda *args, **kwargs: _grid_sample(*args, align_corners=True, **kwargs)

def state(prefix):
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}

upsample = arbrcan.SA_upsample(64).eval()
upsample.load_state_dict(state("up."))
tail = torch.nn.Conv2d(64, 3, 3, padding=1)
tail.load_state_dict(state("tail."))
adapt = arbrcan.SA_adapt(64).eval()
adapt.load_state_dict(state("adapt."))
dtype = torch.get_default_dtype()
upsample, tail, adapt = upsample.to(dtype), tail.to(dtype), adapt.to(dtype)
scale_h, scale_w = (float(v) for v in inputs["upsample_scale"])
adapt_h, adapt_w = (float(v) for v in inputs["adapt_scale"])
with torch.no_grad():
    outputs["upsampled"] = tail(upsample(inputs["features"], scale_h, scale_w)) * 0.5 + 0.5
    outputs["adapted"] = adapt(inputs["features"], adapt_h, adapt_w)
outputs = {key: value.to(torch.float32) for key, value in outputs.items()}
"""


def upsampler_state(decoder: ArbSRDecoder) -> dict[str, torch.Tensor]:
    """Our upsampler and tail under ``SA_upsample``'s names (1×1 convs, experts as (E, out, in, 1, 1))."""
    up = decoder.upsampler
    state = {
        "up.weight_compress": up.compress[..., None, None],
        "up.weight_expand": up.expand[..., None, None],
        "up.body.0.weight": up.embed1.weight[..., None, None],
        "up.body.0.bias": up.embed1.bias,
        "up.body.2.weight": up.embed2.weight[..., None, None],
        "up.body.2.bias": up.embed2.bias,
        "up.routing.0.weight": up.routing.weight[..., None, None],
        "up.routing.0.bias": up.routing.bias,
        "up.offset.weight": up.offset.weight[..., None, None],
        "up.offset.bias": up.offset.bias,
        "tail.weight": decoder.tail.weight,
        "tail.bias": decoder.tail.bias,
    }
    return {name: tensor.detach().clone().contiguous() for name, tensor in state.items()}


def batchnorm_state(prefix: str, affine: ChannelAffine, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A BatchNorm2d in eval with random running statistics whose function is ``affine``'s.

    Eval BatchNorm is (x - mean) / sqrt(var + eps) · gamma + beta, so gamma = weight · sqrt(var + eps) and
    beta = bias + mean · weight.
    """
    channels = affine.weight.shape[0]
    mean = torch.randn(channels, generator=generator) * 0.2
    var = torch.rand(channels, generator=generator) + 0.5
    weight, bias = affine.weight.detach(), affine.bias.detach()
    return {
        f"{prefix}.weight": weight * torch.sqrt(var + BATCHNORM_EPS),
        f"{prefix}.bias": bias + mean * weight,
        f"{prefix}.running_mean": mean,
        f"{prefix}.running_var": var,
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }


def adapter_state(block: AdaptionBlock, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Our adaption block under ``SA_adapt``'s names (``mask`` Sequential indices, ``adapt`` = SA_conv)."""
    mask = block.mask
    if len(mask.middle) != 2:
        raise ValueError("SA_adapt has two half-resolution convolutions (mask_depth 2)")
    convs = [mask.entry, *mask.middle, mask.exit]
    norms = [mask.entry_norm, *mask.middle_norms, mask.exit_norm]
    state: dict[str, torch.Tensor] = {}
    for conv, norm, (conv_index, norm_index) in zip(convs, norms, ((0, 1), (4, 5), (7, 8), (11, 12))):
        state[f"adapt.mask.{conv_index}.weight"] = conv.weight.detach()
        state[f"adapt.mask.{conv_index}.bias"] = conv.bias.detach()
        state.update(batchnorm_state(f"adapt.mask.{norm_index}", norm, generator))
    conv = block.adapt
    channels = conv.channels
    state["adapt.adapt.weight_pool"] = conv.weight.detach().view(conv.experts, channels, channels, 3, 3)
    for ours, theirs in ((0, 0), (2, 2)):
        state[f"adapt.adapt.routing.{theirs}.weight"] = conv.routing[ours].weight.detach()
        state[f"adapt.adapt.routing.{theirs}.bias"] = conv.routing[ours].bias.detach()
    return {name: tensor.clone().contiguous() for name, tensor in state.items()}


@dataclass(frozen=True)
class Comparison:
    """One run of both plug-ins: max abs differences and the outputs' magnitudes."""

    upsampler: float
    upsampler_scale: float
    adapter: float
    adapter_scale: float
    largest_offset: float


def compare(
    repo: Path, feature_size: tuple[int, int], upsample_scale: tuple[int, int], float64: bool
) -> tuple[Comparison, float]:
    """Both plug-ins on the same random features; their code in float64 if asked. Also returns the clamp."""
    model = neutral_model(ModelSpec.of("edsr-baseline", "arbsr"))
    decoder = model.decoder
    assert isinstance(decoder, ArbSRDecoder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Keep the offsets well inside the clamp, where ArbSR's unbounded offsets and ours agree.
        decoder.upsampler.offset.weight.mul_(0.25)
        for norm in decoder.adapters[0].mask.modules():
            if isinstance(norm, ChannelAffine):
                norm.weight.uniform_(0.5, 1.5, generator=generator)
                norm.bias.uniform_(-0.2, 0.2, generator=generator)
    features = torch.randn(1, decoder.channels, *feature_size, generator=generator)

    out_size = (feature_size[0] * upsample_scale[0], feature_size[1] * upsample_scale[1])
    scale = torch.tensor([upsample_scale], dtype=torch.float32)
    ys, xs = make_coord(out_size[0], 1)[:, 0][None], make_coord(1, out_size[1])[:, 1][None]
    cell = make_cell(*out_size, 1)
    with torch.no_grad():
        prepared = decoder.prepare(features, features[:, :3], 1.0, scale)
        grid = decoder.grid_decoder(prepared, ys, xs, cell, 1.0)
        # Uneven chunks that start and end mid-row, so the row cache and its halo rows are exercised.
        chunks = [grid.decode(start, min(start + 53, grid.queries)) for start in range(0, grid.queries, 53)]
        ours_upsampled = torch.cat(chunks, dim=2).view(1, 3, *out_size)
        largest_offset = float(raw_offsets(decoder, prepared, ys, xs).abs().max())
        adapted = decoder.adapters[0](features, 1.0 / torch.tensor([ADAPT_SCALE], dtype=torch.float32))
    if largest_offset >= decoder.config.max_offset:
        raise AssertionError(f"offsets reach {largest_offset:.3f}, outside the clamp: the functions would differ")

    inputs = {
        "features": features,
        "upsample_scale": torch.tensor(upsample_scale, dtype=torch.float64),
        "adapt_scale": torch.tensor(ADAPT_SCALE, dtype=torch.float64),
        "float64": torch.tensor(float64),
    }
    inputs |= upsampler_state(decoder)
    inputs |= adapter_state(decoder.adapters[0], generator)
    theirs = run_public(repo, SNIPPET, inputs)
    diff_up, scale_up = max_abs_diff(ours_upsampled, theirs["upsampled"])
    diff_adapt, scale_adapt = max_abs_diff(adapted, theirs["adapted"])
    return Comparison(diff_up, scale_up, diff_adapt, scale_adapt, largest_offset), decoder.config.max_offset


def check(repo: Path) -> CheckResult:
    published, clamp = compare(repo, FEATURE_SIZE, UPSAMPLE_SCALE, float64=False)
    exact, _ = compare(repo, FLOAT64_FEATURE_SIZE, FLOAT64_UPSAMPLE_SCALE, float64=True)
    return CheckResult(
        part="arbsr",
        repository=REPOSITORY,
        files=("model/arbrcan.py",),
        case=f"on the same random 64-channel features {FEATURE_SIZE[0]}x{FEATURE_SIZE[1]} (ArbSR's backbone is RCAN): "
        f"SA_upsample + tail conv vs our grid decode at x{UPSAMPLE_SCALE[0]} x x{UPSAMPLE_SCALE[1]}; SA_adapt (eval "
        f"BatchNorm) vs our adaption block at x{ADAPT_SCALE[0]} x x{ADAPT_SCALE[1]}",
        max_abs_diff=max(published.upsampler, published.adapter),
        output_scale=max(published.upsampler_scale, published.adapter_scale),
        notes=(
            f"upsampler + tail {published.upsampler:.1e} (outputs up to {published.upsampler_scale:.2f}; offsets up "
            f"to {published.largest_offset:.2f} LR pixels, clamp {clamp}), adaption block {published.adapter:.1e} "
            f"(outputs up to {published.adapter_scale:.2f})",
            f"their code in float64, features {FLOAT64_FEATURE_SIZE[0]}x{FLOAT64_FEATURE_SIZE[1]} at "
            f"x{FLOAT64_UPSAMPLE_SCALE[0]} x x{FLOAT64_UPSAMPLE_SCALE[1]} (exact float32 coordinates), ours float32: "
            f"upsampler + tail {exact.upsampler:.1e}, adaption block {exact.adapter:.1e}",
        ),
    )


def raw_offsets(decoder: ArbSRDecoder, prepared: Prepared, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The upsampler's offsets before the clamp at every output pixel (to show the clamp was inactive)."""
    height, width = (size - 2 * prepared.border for size in prepared.table.shape[1:3])
    up = decoder.upsampler
    pos_y, pos_x = (ys.double() + 1) * (height / 2), (xs.double() + 1) * (width / 2)
    rel_y = (pos_y - torch.floor(pos_y + 1e-3) - 0.5).float()
    rel_x = (pos_x - torch.floor(pos_x + 1e-3) - 0.5).float()
    inverse = prepared.inverse_scale
    embedding = torch.stack(
        torch.broadcast_tensors(
            inverse[:, 1, None, None], inverse[:, 0, None, None], rel_y[:, :, None], rel_x[:, None, :]
        ),
        dim=-1,
    )
    hidden = torch.relu(up.embed2(torch.relu(up.embed1(embedding))))
    return up.offset(hidden)
