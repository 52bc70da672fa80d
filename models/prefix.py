"""Which part of each shared parameter a width uses: the prefix Algorithm 1 may update.

The trainer restores everything outside these regions after each optimiser step (Adam would
otherwise keep moving unused weights on stale momentum), so "only the used prefix is updated"
holds exactly, not just for the gradients.
"""

from __future__ import annotations

from models.anysr import AnySR
from models.liif import decoder_hidden_sizes
from models.sliced_layers import ase_input_size
from models.widths import channels_at

#: Parameter name → index into that tensor selecting the used region. Parameters not listed are
#: used whole (or not at all, when the width's subnet never touches them: there are none here).
PrefixRegions = dict[str, tuple[slice, ...]]


def used_regions(model: AnySR, width: float) -> PrefixRegions:
    """Regions of the sliced parameters that a forward pass at ``width`` reads."""
    spec = model.spec
    regions: PrefixRegions = {}
    if width >= 1.0:
        return regions
    channels = channels_at(spec.n_feats, width)
    ase_inputs = ase_input_size(channels, spec.ase_chunk, spec.interweave)
    for index in range(spec.n_blocks):
        prefix = f"encoder.blocks.{index}"
        regions[f"{prefix}.conv1.weight"] = (slice(0, channels),)
        regions[f"{prefix}.conv1.bias"] = (slice(0, channels),)
        regions[f"{prefix}.conv2.weight"] = (slice(None), slice(0, channels))
        if spec.ase:
            regions[f"{prefix}.ase.fc1.weight"] = (slice(None), slice(0, ase_inputs))
            regions[f"{prefix}.ase.fc2.weight"] = (slice(0, channels),)
            regions[f"{prefix}.ase.fc2.bias"] = (slice(0, channels),)
    if spec.slim_decoder:
        sizes = decoder_hidden_sizes(spec, width)
        in_sizes = [None, *sizes]
        out_sizes = [*sizes, None]
        for index, (size_in, size_out) in enumerate(zip(in_sizes, out_sizes)):
            rows = slice(0, size_out) if size_out is not None else slice(None)
            cols = slice(0, size_in) if size_in is not None else slice(None)
            regions[f"decoder.mlp.layers.{index}.weight"] = (rows, cols)
            regions[f"decoder.mlp.layers.{index}.bias"] = (rows,)
    return regions
