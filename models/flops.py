"""FLOPs of one AnySR inference, from the parts' own MAC counts.

Convention: 1 MAC = 2 FLOPs. Counted: every convolution and matrix product that runs (what
``torch.utils.flop_counter.FlopCounterMode`` counts). Not counted: element-wise work (bias adds,
activations, normalisation, residual adds, pooling, gathers, interpolation, the ensemble blend), which is
around 1% here. Each part counts what it runs (:meth:`models.parts.Encoder.macs`,
:meth:`models.parts.Decoder.macs`), next to the code it counts; per-image work (ASE's MLPs) is counted
once per image. The registry-driven tests hold every part to ``FlopCounterMode`` within 1%.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.anysr import AnySR

FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs of one upscale at one width, split where the compute goes."""

    #: The backbone.
    encoder: int
    #: The upsampler (and, for a decoder that adapts the backbone, its adaption blocks).
    decoder: int

    @property
    def total(self) -> int:
        return self.encoder + self.decoder


def count_flops(
    model: AnySR, lr_size: tuple[int, int], out_size: tuple[int, int], width: float, images: int = 1
) -> FlopsBreakdown:
    """FLOPs of upscaling ``images`` LR images of ``lr_size`` (h, w) to ``out_size`` (H, W) at ``width``.

    Pure arithmetic on the parts' configs (the model may live on the meta device), cheap enough to call
    per request.
    """
    width = model.check_width(width)
    encoder = model.encoder.macs(lr_size, width)
    decoder = model.decoder.macs(lr_size, out_size, width)
    return FlopsBreakdown(encoder=FLOPS_PER_MAC * images * encoder, decoder=FLOPS_PER_MAC * images * decoder)
