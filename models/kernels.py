"""Faster equivalents of two element-wise steps that PyTorch's CPU kernels run slowly in bfloat16.

Profiling a bf16 upscale on a CPU with AMX (``python -m benchmarks.profile_upscale``) showed the matrix
products fast but the passes around them slow, because PyTorch's CPU ``relu_`` and ``mean`` on bfloat16
convert through float32 element by element. ``python -m benchmarks.bench_kernels --threads 2`` (2-core
Xeon with AMX, quiet host; ``benchmarks/results/kernels.json``):

- ReLU of 65,536 × 256: ``relu_`` 2.8 ms, the int16 clamp below 0.95 ms;
- the mean of a (1, 64, 256, 256) channels-last map: ``mean`` 1.7 ms, a product with a ones vector 1.1 ms.

Both keep the result exact (ReLU) or at the accuracy of the dtype (the mean's sum is accumulated in
float32 inside the product). Float32 tensors take PyTorch's own kernels.
"""

from __future__ import annotations

import torch

_SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def relu_(target: torch.Tensor) -> torch.Tensor:
    """In-place ReLU; for 16-bit floats, a clamp of the same bits read as int16. Not differentiable.

    Both 16-bit formats keep the sign in the top bit, so a negative value is a negative int16 and clamps
    to the bits of +0.0, and every other value is left alone: bit-identical to ``relu_`` except that a NaN
    with the sign bit set becomes 0 (inference with finite weights never produces one).
    """
    if target.dtype in _SIXTEEN_BIT:
        target.view(torch.int16).clamp_min_(0)
        return target
    return target.relu_()


def relu_inference(hidden: torch.Tensor) -> torch.Tensor:
    """ReLU of a freshly computed activation: in place through :func:`relu_` when autograd is off
    (inference), ``torch.relu`` otherwise, so training keeps its gradients and its exact numerics."""
    if torch.is_grad_enabled() and hidden.requires_grad:
        return torch.relu(hidden)
    return relu_(hidden)


def spatial_mean(features: torch.Tensor) -> torch.Tensor:
    """Mean over height and width of (B, C, H, W): (B, C), in the input's dtype.

    For 16-bit inputs, as a product with a ones vector (float32 accumulation inside the product), over
    the layout the tensor already has, so no copy is made; float32 uses ``mean``. Differentiable.
    """
    if features.dtype not in _SIXTEEN_BIT:
        return features.mean(dim=(2, 3))
    batch, channels, height, width = features.shape
    count = height * width
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        pixels = features.permute(0, 2, 3, 1).reshape(batch, count, channels)  # a view: NHWC rows
        ones = features.new_ones(batch, 1, count)
        summed = torch.bmm(ones, pixels)[:, 0]
    else:
        planes = features.reshape(batch, channels, count)
        ones = features.new_ones(batch, count, 1)
        summed = torch.bmm(planes, ones)[:, :, 0]
    return (summed.float() / count).to(features.dtype)
