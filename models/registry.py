"""The registry of parts: encoders (backbones) and decoders (arbitrary-scale upsamplers), by name.

A part registers itself where it is defined (LIIF's ``models.make`` habit, timm's ``@register_model``)::

    @register_encoder("rdn", config=RDNConfig, tiny={"n_blocks": 2, ...}, summary="...")
    class RDNEncoder(Encoder): ...

and from then on a spec naming it builds it, ``anysr models`` lists it and the registry-driven tests test
it (at every width, on the ``tiny`` arguments). Adding a part is one file plus its import in its
package's ``__init__``; nothing outside the part names it.

Each part has a typed config: a frozen dataclass derived from :class:`PartConfig` with a default for
every field. A spec's ``args`` are checked against it (unknown keys fail loudly, as a newer file must),
and :func:`resolve_spec` writes every field back into the spec, so a saved model records all of them.
Nothing here imports torch; the built-in parts are imported on first lookup.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from models.spec import ModelSpec, PartSpec

Kind = Literal["encoder", "decoder"]
ConfigT = TypeVar("ConfigT", bound="PartConfig")
PartT = TypeVar("PartT", bound=type)

#: Packages whose import registers the built-in parts.
_BUILTIN_PACKAGES = ("models.encoders", "models.decoders")


@dataclass(frozen=True)
class PartConfig:
    """Base of every part's config: a frozen dataclass whose fields are the part's arguments."""

    @classmethod
    def from_args(cls: type[ConfigT], args: Mapping[str, Any], part: str = "") -> ConfigT:
        """Build from JSON arguments: unknown keys are refused, lists become tuples where the field is one."""
        label = f"{part}: " if part else ""
        fields = {item.name: item for item in dataclasses.fields(cls)}
        unknown = sorted(set(args) - set(fields))
        if unknown:
            raise ValueError(f"{label}unknown arguments {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in args.items():
            values[key] = _coerce(value, hints.get(key))
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"{label}{error}") from None

    def to_args(self) -> dict[str, Any]:
        """Every field as a JSON value (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples as lists, recursively: the form a spec stores."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def _coerce(value: Any, hint: Any) -> Any:
    """Lists to tuples where the config field is a tuple (JSON has no tuples); other values as given."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            if typing.get_origin(option) is tuple and isinstance(value, list | tuple):
                return tuple(value)
        return value
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    return value


@dataclass(frozen=True)
class PartEntry:
    """What the registry knows about one part."""

    kind: Kind
    name: str
    #: The ``nn.Module`` class; encoders are built as ``cls(config)``, decoders as ``cls(config, encoder)``.
    cls: type
    config: type[PartConfig]
    #: Arguments of a test-sized config: the registry-driven tests build every part with these.
    tiny: Mapping[str, Any]
    #: One line for ``anysr models``.
    summary: str

    def make_config(self, args: Mapping[str, Any]) -> PartConfig:
        return self.config.from_args(args, part=f"{self.kind} {self.name!r}")


_REGISTRY: dict[Kind, dict[str, PartEntry]] = {"encoder": {}, "decoder": {}}
_builtins_loaded = False


def _register(kind: Kind, name: str, config: type[PartConfig], tiny: Mapping[str, Any], summary: str) -> Callable:
    if not (dataclasses.is_dataclass(config) and issubclass(config, PartConfig)):
        raise TypeError(f"{kind} {name!r}: config must be a PartConfig dataclass, got {config!r}")

    def decorator(cls: PartT) -> PartT:
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} {name!r} is already registered (by {_REGISTRY[kind][name].cls.__qualname__})")
        entry = PartEntry(kind=kind, name=name, cls=cls, config=config, tiny=dict(tiny), summary=summary)
        entry.make_config(entry.tiny)  # a broken tiny config fails at import, not in some test later
        _REGISTRY[kind][name] = entry
        cls.registered_name = name  # type: ignore[attr-defined]
        return cls

    return decorator


def register_encoder(name: str, *, config: type[PartConfig], tiny: Mapping[str, Any], summary: str) -> Callable:
    """Class decorator: register an :class:`models.parts.Encoder` under ``name``."""
    return _register("encoder", name, config, tiny, summary)


def register_decoder(name: str, *, config: type[PartConfig], tiny: Mapping[str, Any], summary: str) -> Callable:
    """Class decorator: register a :class:`models.parts.Decoder` under ``name``."""
    return _register("decoder", name, config, tiny, summary)


def load_builtin_parts() -> None:
    """Import the built-in part modules (which registers them); cheap after the first call."""
    global _builtins_loaded
    if not _builtins_loaded:
        for package in _BUILTIN_PACKAGES:
            importlib.import_module(package)
        _builtins_loaded = True


def entry(kind: Kind, name: str) -> PartEntry:
    """The registered part ``name`` of ``kind``; a clear error listing the known names otherwise."""
    load_builtin_parts()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY[kind])) or "none"
        raise ValueError(f"unknown {kind} {name!r}; registered {kind}s: {known}") from None


def entries(kind: Kind) -> list[PartEntry]:
    """Every registered part of ``kind``, by name."""
    load_builtin_parts()
    return [_REGISTRY[kind][name] for name in sorted(_REGISTRY[kind])]


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` with every argument of both parts filled in (and checked against the parts' configs)."""
    encoder = entry("encoder", spec.encoder.name).make_config(spec.encoder.args)
    decoder = entry("decoder", spec.decoder.name).make_config(spec.decoder.args)
    return ModelSpec(
        PartSpec.of(spec.encoder.name, encoder.to_args()), PartSpec.of(spec.decoder.name, decoder.to_args())
    )


def tiny_spec(encoder: str, decoder: str) -> ModelSpec:
    """The test-sized model of two registered parts (each at its ``tiny`` arguments)."""
    return ModelSpec.of(encoder, decoder, entry("encoder", encoder).tiny, entry("decoder", decoder).tiny)
