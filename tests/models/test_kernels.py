"""The bf16 fast paths of models/kernels.py against PyTorch's own kernels."""

from __future__ import annotations

import pytest
import torch

from models.kernels import relu_, relu_inference, spatial_mean


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_relu_matches_torch_bit_for_bit_on_every_finite_value(dtype: torch.dtype) -> None:
    values = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 100
    special = torch.tensor([0.0, -0.0, 1e-40, -1e-40, float("inf"), float("-inf"), 65504.0, -65504.0])
    data = torch.cat([values, special]).to(dtype)
    got = relu_(data.clone())
    assert torch.equal(got, torch.relu(data))
    if dtype != torch.float32:
        assert not bool((got.view(torch.int16) < 0).any())  # not even -0.0 keeps its sign bit
    grid = data[:4096].clone().view(64, 64)
    relu_(grid[:, ::2])  # a non-contiguous view is clamped in place, its neighbours untouched
    assert torch.equal(grid[:, ::2], torch.relu(data[:4096].view(64, 64)[:, ::2]))
    assert torch.equal(grid[:, 1::2], data[:4096].view(64, 64)[:, 1::2])


def test_relu_inference_keeps_gradients_when_training() -> None:
    leaf = torch.tensor([-1.0, 2.0], requires_grad=True)
    hidden = leaf * 1.0
    relu_inference(hidden).sum().backward()
    assert leaf.grad is not None and leaf.grad.tolist() == [0.0, 1.0]
    with torch.inference_mode():
        fresh = torch.tensor([-1.0, 2.0], dtype=torch.bfloat16)
        assert relu_inference(fresh) is fresh and fresh.tolist() == [0.0, 2.0]  # in place


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_mean_matches_mean_in_either_layout(dtype: torch.dtype, channels_last: bool) -> None:
    features = torch.rand(2, 5, 9, 7, generator=torch.Generator().manual_seed(1)) * 4 - 1
    expected = features.mean(dim=(2, 3))
    data = features.to(dtype)
    if channels_last:
        data = data.contiguous(memory_format=torch.channels_last)
    got = spatial_mean(data)
    assert got.dtype == dtype and got.shape == (2, 5)
    tolerance = 1e-6 if dtype == torch.float32 else 2e-2  # 16-bit inputs and result: 8 / 11 mantissa bits
    torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)


def test_spatial_mean_is_differentiable_in_bf16() -> None:
    features = torch.rand(1, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    spatial_mean(features).float().sum().backward()
    assert features.grad is not None
    torch.testing.assert_close(features.grad.float(), torch.full((1, 3, 4, 4), 1 / 16), atol=1e-3, rtol=0)
