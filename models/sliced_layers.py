"""Layers that run at a width prefix: a narrow subnet uses the first k filters of the full weights.

Slicing happens at call time on the shared parameters, so every width trains and runs the same
tensors and gradients only reach the used prefix (Algorithm 1's "update only Θ[1:|Θ_t|]").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SlicedConv2d(nn.Conv2d):
    """A 3×3 (or k×k) convolution whose output and/or input channels can be cut to a prefix."""

    def forward_sliced(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """Convolve ``x`` (its channel count picks the input prefix) into ``out_channels`` filters."""
        out = self.out_channels if out_channels is None else out_channels
        weight = self.weight[:out, : x.shape[1]]
        bias = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding)


def interweave_layout(channels: int, chunk: int) -> list[int]:
    """Positions of the pooled channels in the interwoven ASE vector; scale pairs fill the gaps.

    After each *complete* chunk of ``chunk`` channels a (s_h, s_w) pair is inserted, so the vector of a
    narrow subnet is a prefix of the full one and the scale always meets the same W1 columns.
    """
    positions = []
    for c in range(channels):
        positions.append(c + 2 * (c // chunk))
    return positions


def ase_input_size(channels: int, chunk: int, interweave: bool) -> int:
    """Length of the ASE MLP's input for ``channels`` pooled channels."""
    if interweave:
        return channels + 2 * (channels // chunk)
    return channels + 2


class AnyScaleEnhancement(nn.Module):
    """ASE: gate conv1's k channels by an MLP of (pooled features, scale pairs).

    Gate = 2·sigmoid(W2[:k] · ReLU(W1[:, :len] · v)). The factor 2 and W2 = 0 at initialisation make
    the gate exactly 1 at step 0, so a model rebuilt from non-ASE (stage-1) weights computes the same
    function as before; the paper's plain sigmoid would halve every block's features (gate 0.5).
    """

    def __init__(self, n_feats: int, hidden: int, chunk: int, interweave: bool) -> None:
        super().__init__()
        self.n_feats = n_feats
        self.chunk = chunk
        self.interweave = interweave
        self.fc1 = nn.Linear(ase_input_size(n_feats, chunk, interweave), hidden)
        self.fc2 = nn.Linear(hidden, n_feats)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def build_vector(self, pooled: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Interleave ``pooled`` (B, k) with ``scale`` (B, 2) per the layout; (B, len)."""
        channels = pooled.shape[1]
        if not self.interweave:
            return torch.cat([pooled, scale.to(pooled.dtype)], dim=1)
        pieces = []
        for start in range(0, channels, self.chunk):
            stop = min(start + self.chunk, channels)
            pieces.append(pooled[:, start:stop])
            if stop - start == self.chunk:
                pieces.append(scale.to(pooled.dtype))
        return torch.cat(pieces, dim=1)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Gate ``features`` (B, k, h, w) given per-sample ``scale`` (B, 2) = (s_h, s_w)."""
        channels = features.shape[1]
        vector = self.build_vector(features.mean(dim=(2, 3)), scale)
        hidden = F.relu(F.linear(vector, self.fc1.weight[:, : vector.shape[1]], self.fc1.bias))
        gate = 2.0 * torch.sigmoid(F.linear(hidden, self.fc2.weight[:channels], self.fc2.bias[:channels]))
        return features * gate[:, :, None, None]


class SlicedMLP(nn.Module):
    """A ReLU MLP whose hidden layers can be cut to a width prefix (the slim decoder)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        sizes = (in_features, *hidden, out_features)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
