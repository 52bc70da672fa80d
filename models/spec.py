"""The model specification: every architectural choice, as a frozen dataclass that travels in the weights file.

A checkpoint stores this spec as JSON in its safetensors metadata, so a file alone rebuilds its model
(the LIIF habit). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from models.widths import WIDTHS


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of one shared-weight AnySR model (EDSR-baseline encoder + LIIF decoder).

    Defaults are the product model: EDSR-baseline (64 channels, 16 blocks), ASE with feature
    interweaving (λ = n_feats / ase_chunk = 4 insertions), LIIF MLP 4 × 256 with the slim decoder.
    """

    #: Channels between blocks (EDSR-baseline: 64). Never sliced: any decoder plugs in unchanged.
    n_feats: int = 64
    #: Residual blocks in the encoder body (EDSR-baseline: 16).
    n_blocks: int = 16
    #: Any-scale enhancement on conv1's output; False is the paper's "w/o ASE" ablation (and stage 1).
    ase: bool = True
    #: Feature interweaving; False appends (s_h, s_w) once at the end instead ("w/o FI").
    interweave: bool = True
    #: Channels per interweaving chunk: a scale pair follows every complete chunk (64 / 16 = λ = 4).
    ase_chunk: int = 16
    #: Hidden size of the ASE MLP (paper: 2 · C_in = 128).
    ase_hidden: int = 128
    #: Hidden layer sizes of the LIIF MLP at full width.
    decoder_hidden: tuple[int, ...] = (256, 256, 256, 256)
    #: Slice the decoder's hidden layers with the same width (product default); False = paper mode.
    slim_decoder: bool = True
    #: Widths this model was built (and trained) for.
    widths: tuple[float, ...] = WIDTHS

    def __post_init__(self) -> None:
        if self.n_feats < 4 or self.n_blocks < 1:
            raise ValueError(f"n_feats must be >= 4 and n_blocks >= 1, got {self.n_feats}, {self.n_blocks}")
        if self.ase_chunk < 1 or self.ase_chunk > self.n_feats:
            raise ValueError(f"ase_chunk must be between 1 and n_feats={self.n_feats}, got {self.ase_chunk}")
        if not self.decoder_hidden:
            raise ValueError("decoder_hidden needs at least one layer")
        if not self.widths or any(not 0.0 < w <= 1.0 for w in self.widths):
            raise ValueError(f"widths must be in (0, 1], got {self.widths}")

    def to_json(self) -> str:
        """Serialise for checkpoint metadata (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build from a decoded JSON object, rejecting unknown keys so a newer file fails loudly."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model spec keys: {unknown}")
        values = dict(data)
        for key in ("decoder_hidden", "widths"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("model spec must be a JSON object")
        return cls.from_dict(data)


#: A spec small enough for unit tests on 2 cores; shares every code path with the product spec.
TINY_SPEC = ModelSpec(n_feats=16, n_blocks=2, ase_chunk=4, ase_hidden=16, decoder_hidden=(32, 32))
