"""The model specification: which registered parts make the model, and their arguments.

A spec nests ``{"encoder": {"name", "args"}, "decoder": {"name", "args"}}`` (LIIF's ``models.make``
habit): swapping an upsampler or a backbone is a change of names in YAML, never of code. A checkpoint
stores its spec as JSON in the safetensors metadata, so a file alone rebuilds its model. Arguments left
out take the part's defaults; :func:`models.registry.resolve_spec` fills them in, and a built model
keeps the resolved spec, so a saved file always records every argument.

Format 1 files (before the registry) hold a flat EDSR-baseline + LIIF spec; :func:`migrate_flat_spec`
turns one into the nested form, which is how the shipped weights keep loading. Nothing here imports
torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The registered names of the product's parts.
DEFAULT_ENCODER = "edsr-baseline"
DEFAULT_DECODER = "liif"


#: Marks a frozen JSON object, so a list of pairs is never mistaken for one when thawed.
_OBJECT = "\x00object"


def _freeze(value: Any) -> Any:
    """JSON-like values as hashable tuples: lists become tuples, objects tagged tuples of sorted items."""
    if isinstance(value, Mapping):
        return (_OBJECT, tuple(sorted((str(key), _freeze(item)) for key, item in value.items())))
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: plain lists and dicts again."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == _OBJECT:
        return {key: _thaw(item) for key, item in value[1]}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


@dataclass(frozen=True)
class PartSpec:
    """One part: its registered ``name`` and the arguments its config takes (JSON values)."""

    name: str
    #: Stored frozen (see :func:`_freeze`) so specs hash and compare; read them through :attr:`args`.
    frozen_args: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, args: Mapping[str, Any] | None = None) -> PartSpec:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a part needs a non-empty string name, got {name!r}")
        if args is not None and not isinstance(args, Mapping):
            raise ValueError(f"part {name!r}: args must be an object, got {type(args).__name__}")
        return cls(name=name, frozen_args=tuple(sorted((str(k), _freeze(v)) for k, v in (args or {}).items())))

    @property
    def args(self) -> dict[str, Any]:
        """The arguments as plain JSON values (a fresh dict each time; editing it changes nothing here)."""
        return {key: _thaw(value) for key, value in self.frozen_args}

    def with_args(self, **overrides: Any) -> PartSpec:
        """The same part with some arguments replaced."""
        return PartSpec.of(self.name, {**self.args, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}

    @classmethod
    def from_dict(cls, data: Any, role: str) -> PartSpec:
        if isinstance(data, str):
            return cls.of(data)
        if not isinstance(data, Mapping):
            raise ValueError(f"{role} must be a part name or an object with 'name' and 'args'")
        unknown = sorted(set(data) - {"name", "args"})
        if unknown:
            raise ValueError(f"{role}: unknown keys {unknown} (a part is {{name, args}})")
        if "name" not in data:
            raise ValueError(f"{role}: missing 'name'")
        return cls.of(data["name"], data.get("args") or {})


@dataclass(frozen=True)
class ModelSpec:
    """An AnySR model: a backbone (encoder) and an arbitrary-scale upsampler (decoder), by registered name.

    The default is the product model, EDSR-baseline + LIIF with every argument at its default.
    """

    encoder: PartSpec = field(default_factory=lambda: PartSpec.of(DEFAULT_ENCODER))
    decoder: PartSpec = field(default_factory=lambda: PartSpec.of(DEFAULT_DECODER))

    @classmethod
    def of(
        cls,
        encoder: str = DEFAULT_ENCODER,
        decoder: str = DEFAULT_DECODER,
        encoder_args: Mapping[str, Any] | None = None,
        decoder_args: Mapping[str, Any] | None = None,
    ) -> ModelSpec:
        """Shorthand: ``ModelSpec.of("rdn", "liif", encoder_args={"n_blocks": 4})``."""
        return cls(PartSpec.of(encoder, encoder_args), PartSpec.of(decoder, decoder_args))

    def replace_args(
        self, encoder: Mapping[str, Any] | None = None, decoder: Mapping[str, Any] | None = None
    ) -> ModelSpec:
        """The same parts with some arguments replaced (e.g. ``encoder={"ase": False}`` for the ablation)."""
        return ModelSpec(self.encoder.with_args(**(encoder or {})), self.decoder.with_args(**(decoder or {})))

    @property
    def label(self) -> str:
        """``"edsr-baseline+liif"``: how reports and metrics name the parts."""
        return f"{self.encoder.name}+{self.decoder.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_dict(), "decoder": self.decoder.to_dict()}

    def to_json(self) -> str:
        """Serialise for checkpoint metadata (sorted keys: equal specs give equal text)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """Build from a decoded JSON object, rejecting unknown keys so a newer file fails loudly."""
        if not isinstance(data, Mapping):
            raise ValueError("model spec must be a JSON object")
        unknown = sorted(set(data) - {"encoder", "decoder"})
        if unknown:
            raise ValueError(f"unknown model spec keys: {unknown} (a spec is {{encoder, decoder}})")
        return cls(
            encoder=PartSpec.from_dict(data.get("encoder", DEFAULT_ENCODER), "encoder"),
            decoder=PartSpec.from_dict(data.get("decoder", DEFAULT_DECODER), "decoder"),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(json.loads(text))


#: Keys of the format-1 flat spec and where each went: (part, argument name).
_FLAT_KEYS: dict[str, tuple[str, str]] = {
    "n_feats": ("encoder", "n_feats"),
    "n_blocks": ("encoder", "n_blocks"),
    "ase": ("encoder", "ase"),
    "interweave": ("encoder", "interweave"),
    "ase_chunk": ("encoder", "ase_chunk"),
    "ase_hidden": ("encoder", "ase_hidden"),
    "widths": ("encoder", "widths"),
    "decoder_hidden": ("decoder", "hidden"),
    "slim_decoder": ("decoder", "slim"),
}


def migrate_flat_spec(data: Any) -> ModelSpec:
    """A format-1 spec (flat EDSR-baseline + LIIF fields) as a nested spec with the same architecture.

    Unknown keys are refused, as format 1 itself refused them: a file this cannot map is not guessed at.
    """
    if not isinstance(data, Mapping):
        raise ValueError("model spec must be a JSON object")
    unknown = sorted(set(data) - set(_FLAT_KEYS))
    if unknown:
        raise ValueError(f"unknown format-1 model spec keys: {unknown}")
    parts: dict[str, dict[str, Any]] = {"encoder": {}, "decoder": {}}
    for key, value in data.items():
        part, name = _FLAT_KEYS[key]
        parts[part][name] = value
    return ModelSpec.of(DEFAULT_ENCODER, DEFAULT_DECODER, parts["encoder"], parts["decoder"])


#: The product model with every argument at its default.
DEFAULT_SPEC = ModelSpec()

#: A spec small enough for unit tests on 2 cores; shares every code path with the product spec.
TINY_SPEC = ModelSpec.of(
    DEFAULT_ENCODER,
    DEFAULT_DECODER,
    {"n_feats": 16, "n_blocks": 2, "ase_chunk": 4, "ase_hidden": 16},
    {"hidden": [32, 32]},
)
