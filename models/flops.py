"""FLOPs of one AnySR inference, from the architecture's own MAC counts.

Convention: 1 MAC = 2 FLOPs. Counted: every convolution and matrix product that runs (what
``torch.utils.flop_counter.FlopCounterMode`` counts). Not counted: element-wise work (bias adds,
ReLU, sigmoid, residual adds, pooling, gathers, the ensemble blend), which is well under 1% here.
The per-image ASE MLP is counted once per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.edsr_anysr import encoder_macs_per_image, encoder_macs_per_lr_pixel
from models.liif import decoder_macs
from models.spec import ModelSpec

FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs of one image at one width, split where the compute goes."""

    encoder: int
    decoder: int

    @property
    def total(self) -> int:
        return self.encoder + self.decoder


def count_flops(
    spec: ModelSpec, lr_size: tuple[int, int], out_size: tuple[int, int], width: float, images: int = 1
) -> FlopsBreakdown:
    """FLOPs of upscaling ``images`` LR images of ``lr_size`` (h, w) to ``out_size`` (H, W) at ``width``."""
    lr_pixels = lr_size[0] * lr_size[1]
    out_pixels = out_size[0] * out_size[1]
    encoder = encoder_macs_per_lr_pixel(spec, width) * lr_pixels + encoder_macs_per_image(spec, width)
    per_lr_pixel, per_out_pixel = decoder_macs(spec, width)
    decoder = per_lr_pixel * lr_pixels + per_out_pixel * out_pixels
    return FlopsBreakdown(encoder=FLOPS_PER_MAC * images * encoder, decoder=FLOPS_PER_MAC * images * decoder)
