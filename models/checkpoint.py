"""AnySR checkpoints: safetensors files that carry their own model spec, so a file alone rebuilds its model.

Layout: the model's state dict as contiguous CPU tensors, plus string metadata

- ``anysr.format``: ``"2"``, the version of this layout;
- ``anysr.spec``: :meth:`ModelSpec.to_json`, the nested ``{encoder, decoder}`` spec naming registered
  parts with every argument, enough to build the architecture;
- ``anysr.training``: JSON object describing how the weights were made (steps, data, losses, ...).

Format 1 (before the registry) stored a flat EDSR-baseline + LIIF spec; such files are read by migrating
that spec (:func:`models.spec.migrate_flat_spec`). Their tensors already have format 2's names, so
the shipped weights load unchanged, byte for byte the same file.

Nothing here uses pickle or ``torch.load``: a weights file is data, never code, so the server can load a file
it did not write. Every way a file can be wrong (missing, truncated, not safetensors, bad metadata, tensors
that do not fit the spec, non-finite values) raises :class:`CheckpointError` naming the file and the problem,
and tensors are checked against a meta-device model before any real model is allocated.

Stage 2 of training rebuilds a stage-1 model (``ase=False``) with ASE: :func:`load_weights_into` with
``allow_missing_ase=True`` loads everything else and leaves the ASE parameters at their identity
initialisation, so the new model computes exactly the stage-1 function at step 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from models.anysr import AnySR, build_model
from models.ase import AnyScaleEnhancement
from models.registry import resolve_spec
from models.spec import ModelSpec, migrate_flat_spec

#: Version of the metadata layout this module writes.
FORMAT_VERSION = "2"
#: Versions it reads (older ones are migrated on load).
READABLE_VERSIONS = ("1", "2")
FORMAT_KEY = "anysr.format"
SPEC_KEY = "anysr.spec"
TRAINING_KEY = "anysr.training"

#: How many offending tensor names an error message lists before summarising the rest.
_NAMES_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not describe a valid AnySR model."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file says about itself, read without trusting anything but the file."""

    path: Path
    spec: ModelSpec
    #: The ``anysr.training`` object ({} when the writer recorded none).
    training: dict[str, Any]
    #: Hex SHA-256 of the exact bytes read, so logs and the model card name the file unambiguously. It names the
    #: file, not the weights: safetensors writes metadata keys in no fixed order, so re-saving may change it.
    sha256: str
    #: Scalars stored (equals the model's parameter count: the model has no buffers).
    parameter_count: int
    #: Storage dtype of the tensors, e.g. "float32" ("mixed" if they differ).
    dtype: str


def save_checkpoint(
    path: str | os.PathLike[str],
    model: AnySR,
    training_info: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> CheckpointInfo:
    """Write ``model``'s weights and spec to ``path`` (a ``.safetensors`` file) and describe what was written.

    ``dtype`` (a floating dtype, e.g. ``torch.float16`` for a smaller shipped file) converts the stored
    tensors; by default they keep the model's dtype, so a float32 round trip is bit-exact. The file is
    written beside ``path`` and renamed into place, so a reader (or a crash) never sees half a file.
    """
    path = Path(path)
    if not isinstance(model, AnySR):
        raise TypeError(f"model must be an AnySR, got {type(model).__name__}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype such as torch.float16, got {dtype}")
    training = dict(training_info or {})
    try:
        training_json = json.dumps(training, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"training_info must be JSON-serialisable: {error}") from error

    tensors = {
        name: tensor.detach().to(device="cpu", dtype=dtype or tensor.dtype).contiguous()
        for name, tensor in model.state_dict().items()
    }
    metadata = {FORMAT_KEY: FORMAT_VERSION, SPEC_KEY: model.spec.to_json(), TRAINING_KEY: training_json}
    data = safetensors.torch.save(tensors, metadata=metadata)

    # A unique name per call (concurrent savers never share one); plain open keeps the umask's permissions.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    # Described from what was written (JSON turns tuples into lists), so it equals what a reader gets.
    return _describe(path, data, model.spec, json.loads(training_json), tensors)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[AnySR, CheckpointInfo]:
    """Build the model a checkpoint describes, load its weights, move it to ``map_location``, set eval mode.

    Raises :class:`CheckpointError` for any file that is not a complete, consistent AnySR checkpoint.
    """
    info, tensors = _read(Path(path))
    model = build_model(info.spec)
    load_state_into(model, tensors, source=str(info.path))
    return model.to(map_location).eval(), info


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read and fully validate a checkpoint's metadata and tensors without building the model.

    For ``anysr info``, the model card and the server's startup log. Validation is the same as
    :func:`load_checkpoint`'s, so a file this accepts also loads.
    """
    info, _ = _read(Path(path))
    return info


def load_weights_into(
    path: str | os.PathLike[str],
    model: AnySR,
    *,
    allow_missing_ase: bool = False,
    parts: tuple[str, ...] | None = None,
    drop_ase: bool = False,
) -> CheckpointInfo:
    """Load a checkpoint's weights into an existing ``model`` (whose spec may differ from the file's).

    The trainer's stage 2 uses this with ``allow_missing_ase=True``: it builds the ASE model from the
    stage-1 file's spec with ``ase=True`` and loads the stage-1 weights; see :func:`load_state_into`.
    Shapes must match exactly; arguments that do not change shapes (LIIF's ``slim``, ``widths``) may
    differ on purpose, e.g. a paper-mode LIIF initialising a slim-decoder model.

    ``parts`` (e.g. ``("encoder",)``) loads only those top-level modules, checked as strictly, and leaves
    the rest at the model's own initialisation: how a new decoder starts on a trained backbone.

    ``drop_ase`` ignores the file's ASE tensors, so the model's ASE keeps its identity initialisation (or
    the model has none): a stage-2 file then seeds a run as if it were a stage-1 file. It implies
    ``allow_missing_ase``.
    """
    info, tensors = _read(Path(path))
    if drop_ase:
        with torch.device("meta"):
            source_ase = _ase_parameter_names(build_model(info.spec))
        tensors = {name: tensor for name, tensor in tensors.items() if name not in source_ase}
        allow_missing_ase = True
    if parts is None:
        load_state_into(model, tensors, allow_missing_ase=allow_missing_ase, source=str(info.path))
        return info
    unknown = sorted(set(parts) - {name for name, _ in model.named_children()})
    if unknown:
        raise CheckpointError(f"{info.path}: the model has no part(s) {unknown}")
    for part in parts:
        prefix = f"{part}."
        module = getattr(model, part)
        selected = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
        load_state_into(module, selected, allow_missing_ase=allow_missing_ase, source=f"{info.path} [{part}]")
    return info


def load_state_into(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    allow_missing_ase: bool = False,
    source: str = "state dict",
) -> tuple[str, ...]:
    """Copy ``tensors`` into ``model`` after checking names, shapes, dtypes and finiteness.

    Every model tensor must be present, except, when ``allow_missing_ase`` is set, the parameters of
    *all* ASE modules at once (a stage-1 ``ase=False`` state dict). Those keep the values the model
    holds, which in a freshly built model is the identity initialisation (W2 = 0, gate exactly 1), so
    the model reproduces the stage-1 function bit for bit. Returns the names left untouched.
    Raises :class:`CheckpointError` (naming ``source``) on any mismatch; the model is unchanged then.
    """
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    optional = _ase_parameter_names(model) if allow_missing_ase else set()
    problems = _mismatches(tensors, expected, optional)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(problems))
    with torch.no_grad():
        model.load_state_dict(dict(tensors), strict=False)
    return tuple(sorted(set(expected) - set(tensors)))


def _read(path: Path) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """Read ``path`` once (so the hash, metadata and tensors all come from the same bytes) and validate it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read checkpoint: {error.strerror or error}") from error
    try:
        tensors = safetensors.torch.load(data)
    except SafetensorError as error:
        hint = "truncated or corrupt?"
        if _looks_pickled(data):
            hint = "it looks like a torch.save/pickle file; AnySR only loads safetensors"
        raise CheckpointError(f"{path}: not a valid safetensors file ({hint}): {error}") from error
    metadata = _header_metadata(data)

    version = metadata.get(FORMAT_KEY)
    if version is None:
        raise CheckpointError(f"{path}: not an AnySR checkpoint (no '{FORMAT_KEY}' metadata)")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {version!r}; this code reads {', '.join(READABLE_VERSIONS)}"
        )
    spec = _parse_spec(path, metadata.get(SPEC_KEY), version)
    training = _parse_training(path, metadata.get(TRAINING_KEY))

    problems = _mismatches(tensors, _expected_shapes(path, spec))
    if problems:
        raise CheckpointError(f"{path}: tensors do not match the spec in its metadata: " + "; ".join(problems))
    return _describe(path, data, spec, training, tensors), tensors


def _looks_pickled(data: bytes) -> bool:
    """Whether rejected bytes start like torch.save's zip archive or a raw pickle (protocol 2-5), to say so.

    A safetensors header length can also start with 0x80, but its JSON header then opens with "{" at byte 8.
    """
    if data.startswith(b"PK\x03\x04"):
        return True
    return len(data) > 1 and data[0] == 0x80 and 2 <= data[1] <= 5 and data[8:9] != b"{"


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` map of safetensors bytes that :func:`safetensors.torch.load` already accepted.

    Layout (safetensors spec): 8-byte little-endian header length, then that many bytes of JSON.
    """
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    return dict(header.get("__metadata__") or {})


def _parse_spec(path: Path, text: str | None, version: str) -> ModelSpec:
    """The file's spec, migrated to the nested form if the file is format 1, with every argument resolved."""
    if text is None:
        raise CheckpointError(f"{path}: no model spec ('{SPEC_KEY}' metadata is missing)")
    try:
        data = json.loads(text)
        spec = migrate_flat_spec(data) if version == "1" else ModelSpec.from_dict(data)
        return resolve_spec(spec)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: invalid model spec in '{SPEC_KEY}': {error}") from error


def _parse_training(path: Path, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        training = json.loads(text)
    except ValueError as error:
        raise CheckpointError(f"{path}: '{TRAINING_KEY}' metadata is not valid JSON: {error}") from error
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: '{TRAINING_KEY}' must be a JSON object, got {type(training).__name__}")
    return training


def _expected_shapes(path: Path, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the model ``spec`` describes, from a meta-device model (allocates no memory)."""
    try:
        with torch.device("meta"):
            model = build_model(spec)
    except (ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the model spec cannot be built: {error}") from error
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _mismatches(
    tensors: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], optional: set[str] | None = None
) -> list[str]:
    """Everything wrong with ``tensors`` as the state of a model with ``expected`` shapes, as readable phrases.

    Names in ``optional`` may be absent, but only all together (a half-present module is a broken file).
    """
    problems = []
    optional = optional or set()
    missing = sorted(set(expected) - set(tensors))
    if missing and set(missing) != optional:
        if set(missing) < optional:
            problems.append(f"only some ASE tensors are missing ({_list(missing)}); expected all or none")
        else:
            problems.append(f"missing tensors {_list(missing)}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        problems.append(f"unexpected tensors {_list(unexpected)}")
    tensor_problems = []
    for name in sorted(set(tensors) & set(expected)):
        tensor = tensors[name]
        if tuple(tensor.shape) != expected[name]:
            tensor_problems.append(f"{name} has shape {tuple(tensor.shape)}, expected {expected[name]}")
        elif not tensor.is_floating_point():
            tensor_problems.append(f"{name} has dtype {tensor.dtype}, expected a floating dtype")
        elif not bool(torch.isfinite(tensor).all()):
            tensor_problems.append(f"{name} contains NaN or infinite values")
    problems += tensor_problems[:_NAMES_SHOWN]
    if len(tensor_problems) > _NAMES_SHOWN:
        problems.append(f"... and {len(tensor_problems) - _NAMES_SHOWN} more tensors like these")
    return problems


def _ase_parameter_names(model: nn.Module) -> set[str]:
    """State-dict names that belong to ASE modules (absent from stage-1 files)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, AnyScaleEnhancement):
            names.update(f"{prefix}.{name}" for name in module.state_dict())
    return names


def _describe(
    path: Path, data: bytes, spec: ModelSpec, training: dict[str, Any], tensors: Mapping[str, torch.Tensor]
) -> CheckpointInfo:
    dtypes = {str(tensor.dtype).removeprefix("torch.") for tensor in tensors.values()}
    return CheckpointInfo(
        path=path,
        spec=spec,
        training=training,
        sha256=hashlib.sha256(data).hexdigest(),
        parameter_count=sum(math.prod(tensor.shape) for tensor in tensors.values()),
        dtype=dtypes.pop() if len(dtypes) == 1 else "mixed",
    )


def _list(names: list[str]) -> str:
    """At most a few names, then how many more: error messages stay one readable line."""
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"
