"""Which part of each shared parameter a width uses: the prefix Algorithm 1 may update.

Each part declares its own regions (:meth:`models.parts.Encoder.used_regions`); this module asks the
model and does the bookkeeping on top: counting a subnet's parameters, and the snapshot/restore the
trainer runs around each narrow-width step. Adam would otherwise keep moving unused weights on stale
momentum, so restoring everything outside the regions makes "only the used prefix is updated" hold
exactly, not just for the gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from models.anysr import AnySR
from models.parts import Box, Regions

#: A parameter, copies of it (and of its optimiser moments), and the boxes of it the width uses.
Snapshot = list[tuple[nn.Parameter, list[torch.Tensor], tuple[Box, ...]]]


def used_regions(model: AnySR, width: float) -> Regions:
    """Regions of the sliced parameters that a forward pass at ``width`` reads (by state-dict name)."""
    return model.used_regions(width)


def parameters_used(model: AnySR, width: float) -> int:
    """Scalars a subnet of ``width`` reads: every parameter, counting only its regions where it has some.

    Works on a meta-device model (no memory): it only looks at shapes. Boxes are disjoint by contract.
    """
    regions = used_regions(model, width)
    total = 0
    for name, param in model.named_parameters():
        if name in regions:
            total += sum(param[box].numel() for box in regions[name])
        else:
            total += param.numel()
    return total


def snapshot_unused(model: AnySR, moments: dict[nn.Parameter, list[torch.Tensor]], width: float) -> Snapshot:
    """Copies of every parameter the width leaves partly unused, with its optimiser ``moments``."""
    regions = used_regions(model, width)
    saved: Snapshot = []
    for name, param in model.named_parameters():
        if name in regions:
            tensors = [param.detach(), *moments.get(param, [])]
            saved.append((param, [tensor.clone() for tensor in tensors], regions[name]))
    return saved


def restore_unused(saved: Snapshot, moments: dict[nn.Parameter, list[torch.Tensor]]) -> None:
    """Put back everything outside each used region, so only the prefix moved (Algorithm 1).

    Slices only (no boolean masks): on CUDA a masked assignment synchronises the host on every
    parameter, which would stall each narrow-width step.
    """
    for param, copies, boxes in saved:
        live = [param.data, *moments.get(param, [])]
        for target, copy in zip(live, copies):
            updated = [target[box].clone() for box in boxes]
            target.copy_(copy)
            for box, values in zip(boxes, updated):
                target[box] = values
