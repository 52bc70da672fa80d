"""models/checkpoint.py: self-describing safetensors checkpoints, strict validation, stage-1 → stage-2 loading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch

from models.anysr import AnySR, build_model
from models.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    load_state_into,
    load_weights_into,
    read_checkpoint_info,
    save_checkpoint,
)
from models.registry import resolve_spec, tiny_spec
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS

RESOLVED = resolve_spec(TINY_SPEC)

TRAINING = {"stage": 2, "steps": 1200, "data": ["T91", "BSD200"], "l1": 0.0312, "patch": [48, 48]}
METADATA = {"anysr.format": "2", "anysr.spec": RESOLVED.to_json(), "anysr.training": json.dumps(TRAINING)}


def outputs(model: AnySR) -> list[torch.Tensor]:
    lr = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(3))
    return [model.upscale(lr, (8, 13), width, scale=(1.3, 2.7)) for width in WIDTHS]


def write_raw(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A safetensors file with exactly these tensors and metadata (to build broken checkpoints)."""
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    return path


def state(model: AnySR) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_round_trip_is_bit_exact(tiny_model: AnySR, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    saved = save_checkpoint(path, tiny_model, {**TRAINING, "patch": (48, 48)})  # a tuple comes back as a list
    loaded, info = load_checkpoint(path)
    assert isinstance(loaded, AnySR) and not loaded.training
    assert loaded.spec == tiny_model.spec
    assert loaded.state_dict().keys() == tiny_model.state_dict().keys()
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for ours, theirs in zip(outputs(loaded), outputs(tiny_model), strict=True):
        assert torch.equal(ours, theirs)
    assert info == saved == read_checkpoint_info(path)


def test_info_describes_the_file(tiny_model: AnySR, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model, TRAINING)
    info = read_checkpoint_info(str(path))
    assert isinstance(info, CheckpointInfo)
    assert info.path == path
    assert info.spec == RESOLVED
    assert info.training == TRAINING
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.parameter_count == sum(param.numel() for param in tiny_model.parameters())
    assert info.dtype == "float32"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.sha256 = "0" * 64  # type: ignore[misc]


def test_file_is_plain_safetensors_with_the_spec_in_metadata(tiny_model: AnySR, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model)
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    metadata = header["__metadata__"]
    assert metadata["anysr.format"] == "2"
    # Every argument is written out, defaults included, so the file does not depend on today's defaults.
    assert json.loads(metadata["anysr.spec"]) == json.loads(RESOLVED.to_json())
    assert json.loads(metadata["anysr.spec"])["encoder"]["args"]["widths"] == [0.5, 0.7, 0.9, 1.0]
    assert json.loads(metadata["anysr.training"]) == {}
    assert set(header) - {"__metadata__"} == set(tiny_model.state_dict())
    assert sorted(path.parent.iterdir()) == [path]  # the temporary file was renamed, not left behind


def test_no_pickle_is_involved(tiny_model: AnySR, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle-based loading was called")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(module, name, forbidden)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model, TRAINING)
    load_checkpoint(path)
    read_checkpoint_info(path)


def test_saving_half_precision_halves_the_file_and_loads_as_float32(tiny_model: AnySR, tmp_path: Path) -> None:
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_checkpoint(full, tiny_model)
    info = save_checkpoint(half, tiny_model, dtype=torch.float16)
    assert info.dtype == "float16"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    for name, tensor in tiny_model.state_dict().items():
        assert loaded.state_dict()[name].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[name], tensor.half().float()), name


def test_a_channels_last_model_saves_and_reloads_exactly(tiny_model: AnySR, tmp_path: Path) -> None:
    """The trainer runs channels_last; the file must still hold plain contiguous tensors."""
    reference = state(tiny_model)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model.to(memory_format=torch.channels_last))
    loaded, _ = load_checkpoint(path)
    for name, tensor in reference.items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_map_location_accepts_strings_and_devices(tiny_model: AnySR, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model)
    for location in ("cpu", torch.device("cpu")):
        model, _ = load_checkpoint(path, map_location=location)
        assert {param.device.type for param in model.parameters()} == {"cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loads_onto_a_gpu_and_computes_the_same_images(tiny_model: AnySR, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model)
    model, _ = load_checkpoint(path, map_location="cuda")
    assert {param.device.type for param in model.parameters()} == {"cuda"}
    lr = torch.rand(1, 3, 6, 5)
    on_gpu = model.upscale(lr.cuda(), (11, 13), 0.7).cpu()
    # cuDNN may run the convolutions in TF32 (10-bit mantissa), hence the looser tolerance.
    torch.testing.assert_close(on_gpu, tiny_model.upscale(lr, (11, 13), 0.7), rtol=0, atol=5e-3)


def test_save_rejects_bad_arguments(tiny_model: AnySR, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training_info must be JSON-serialisable"):
        save_checkpoint(tmp_path / "a.safetensors", tiny_model, {"when": object()})
    with pytest.raises(ValueError, match="dtype must be a floating dtype.*torch.int8"):
        save_checkpoint(tmp_path / "b.safetensors", tiny_model, dtype=torch.int8)
    with pytest.raises(TypeError, match="model must be an AnySR"):
        save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def broken_files(tmp_path: Path, model: AnySR) -> dict[str, tuple[Path, str]]:
    """Each kind of bad file, with a phrase its error message must contain."""
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, model, TRAINING)
    data = good.read_bytes()
    tensors = state(model)
    name = "encoder.head.weight"
    cases: dict[str, tuple[Path, str]] = {}

    def add(case: str, path: Path, phrase: str) -> None:
        cases[case] = (path, phrase)

    def raw(case: str, data_bytes: bytes, phrase: str) -> None:
        path = tmp_path / f"{case}.safetensors"
        path.write_bytes(data_bytes)
        add(case, path, phrase)

    def with_metadata(case: str, phrase: str, **changes: str | None) -> None:
        metadata = {key: value for key, value in METADATA.items() if changes.get(key, value) is not None}
        metadata.update({key: value for key, value in changes.items() if value is not None})
        add(case, write_raw(tmp_path / f"{case}.safetensors", tensors, metadata), phrase)

    def with_tensors(case: str, phrase: str, new_tensors: dict[str, torch.Tensor]) -> None:
        add(case, write_raw(tmp_path / f"{case}.safetensors", new_tensors, METADATA), phrase)

    add("missing file", tmp_path / "absent.safetensors", "not found")
    add("directory", tmp_path, "cannot read checkpoint")
    raw("empty", b"", "not a valid safetensors file")
    raw("truncated", data[:-10], "not a valid safetensors file")
    raw("header only", data[: len(data) // 50], "not a valid safetensors file")
    raw("pickle zip", b"PK\x03\x04" + bytes(range(256)) * 4, "looks like a torch.save/pickle file")
    raw("raw pickle", pickle.dumps({"state_dict": [1.0, 2.0]}), "looks like a torch.save/pickle file")
    raw("text", b"this is not a checkpoint at all\n" * 8, "not a valid safetensors file")
    raw("corrupt header", data[:8] + b"#" + data[9:], "not a valid safetensors file")
    with_metadata("no format", "no 'anysr.format' metadata", **{"anysr.format": None})
    with_metadata("future format", "unsupported checkpoint format '3'", **{"anysr.format": "3"})
    with_metadata("no spec", "'anysr.spec' metadata is missing", **{"anysr.spec": None})
    with_metadata("spec not json", "invalid model spec in 'anysr.spec'", **{"anysr.spec": "{n_feats: 16"})
    with_metadata("spec not object", "invalid model spec", **{"anysr.spec": "[16, 2]"})
    unknown = json.dumps({**json.loads(TINY_SPEC.to_json()), "attention": True})
    with_metadata("unknown spec key", "unknown model spec keys: ['attention']", **{"anysr.spec": unknown})
    invalid = TINY_SPEC.replace_args(encoder={"n_feats": 2}).to_json()
    with_metadata("invalid spec value", "n_feats must be >= 4", **{"anysr.spec": invalid})
    wrong_type = TINY_SPEC.replace_args(encoder={"n_blocks": "two"}).to_json()
    with_metadata("spec value of wrong type", "invalid model spec", **{"anysr.spec": wrong_type})
    unknown_part = json.dumps({**json.loads(TINY_SPEC.to_json()), "decoder": {"name": "nerf", "args": {}}})
    with_metadata("unregistered part", "unknown decoder 'nerf'; registered decoders:", **{"anysr.spec": unknown_part})
    unknown_arg = TINY_SPEC.replace_args(encoder={"attention": True}).to_json()
    with_metadata("unknown part argument", "unknown arguments ['attention']", **{"anysr.spec": unknown_arg})
    with_metadata("training not json", "'anysr.training' metadata is not valid JSON", **{"anysr.training": "{"})
    with_metadata("training not object", "'anysr.training' must be a JSON object", **{"anysr.training": "[1]"})
    with_tensors("missing tensor", f"missing tensors [{name}]", {k: v for k, v in tensors.items() if k != name})
    with_tensors("extra tensor", "unexpected tensors [encoder.extra]", {**tensors, "encoder.extra": torch.zeros(2)})
    with_tensors(
        "wrong shape",
        f"{name} has shape (16, 3, 3, 2), expected (16, 3, 3, 3)",
        {**tensors, name: torch.zeros(16, 3, 3, 2)},
    )
    integer = torch.zeros(16, 3, 3, 3, dtype=torch.int32)
    with_tensors("integer tensor", f"{name} has dtype torch.int32", {**tensors, name: integer})
    nan = tensors[name].clone()
    nan[0, 0, 0, 0] = float("nan")
    with_tensors("nan", f"{name} contains NaN or infinite values", {**tensors, name: nan})
    other_spec = TINY_SPEC.replace_args(encoder={"n_feats": 8, "ase_chunk": 4})
    mismatch = "tensors do not match the spec in its metadata: decoder.mlp.layers.0.weight has shape (32, 148), expected (32, 76); "
    with_metadata("spec of another model", mismatch, **{"anysr.spec": other_spec.to_json()})
    return cases


CASES = [
    "missing file",
    "directory",
    "empty",
    "truncated",
    "header only",
    "pickle zip",
    "raw pickle",
    "text",
    "corrupt header",
    "no format",
    "future format",
    "unregistered part",
    "unknown part argument",
    "no spec",
    "spec not json",
    "spec not object",
    "unknown spec key",
    "invalid spec value",
    "spec value of wrong type",
    "training not json",
    "training not object",
    "missing tensor",
    "extra tensor",
    "wrong shape",
    "integer tensor",
    "nan",
    "spec of another model",
]


@pytest.fixture
def broken(tmp_path: Path, tiny_model: AnySR) -> dict[str, tuple[Path, str]]:
    cases = broken_files(tmp_path, tiny_model)
    assert sorted(cases) == sorted(CASES)
    return cases


@pytest.mark.parametrize("case", CASES)
def test_bad_files_raise_checkpoint_error_naming_file_and_problem(
    broken: dict[str, tuple[Path, str]], case: str
) -> None:
    path, phrase = broken[case]
    for reader in (load_checkpoint, read_checkpoint_info):
        with pytest.raises(CheckpointError) as error:
            reader(path)
        message = str(error.value)
        assert str(path) in message
        assert phrase in message
    assert issubclass(CheckpointError, ValueError)


def test_error_lists_a_few_names_then_counts_the_rest(tiny_model: AnySR, tmp_path: Path) -> None:
    tensors = {name: tensor for name, tensor in state(tiny_model).items() if not name.startswith("decoder.")}
    path = write_raw(tmp_path / "encoder-only.safetensors", tensors, METADATA)
    with pytest.raises(CheckpointError, match=r"missing tensors \[decoder\.mlp\.layers\.0\.bias, .*, \.\.\. 1 more\]"):
        load_checkpoint(path)


def stage1_checkpoint(tmp_path: Path, factory: Callable[..., AnySR]) -> tuple[Path, AnySR]:
    stage1 = factory(TINY_SPEC.replace_args(encoder={"ase": False}), seed=5)
    path = tmp_path / "stage1.safetensors"
    save_checkpoint(path, stage1, {"stage": 1})
    return path, stage1


def test_stage1_weights_in_an_ase_model_reproduce_stage1_exactly(
    tmp_path: Path, tiny_model_factory: Callable[..., AnySR]
) -> None:
    path, stage1 = stage1_checkpoint(tmp_path, tiny_model_factory)
    stage2 = build_model(TINY_SPEC).eval()  # fresh: ASE at its identity initialisation
    fresh_ase = {name: tensor for name, tensor in state(stage2).items() if ".ase." in name}
    info = load_weights_into(path, stage2, allow_missing_ase=True)
    assert info.training == {"stage": 1} and not info.spec.encoder.args["ase"]
    for ours, theirs in zip(outputs(stage2), outputs(stage1), strict=True):
        assert torch.equal(ours, theirs)
    for name, tensor in fresh_ase.items():
        assert torch.equal(stage2.state_dict()[name], tensor), name


def test_load_state_into_reports_which_ase_tensors_kept_their_init(tiny_model_factory: Callable[..., AnySR]) -> None:
    stage1 = tiny_model_factory(TINY_SPEC.replace_args(encoder={"ase": False}))
    stage2 = build_model(TINY_SPEC)
    kept = load_state_into(stage2, stage1.state_dict(), allow_missing_ase=True)
    ase_names = {name for name in stage2.state_dict() if ".ase." in name}
    assert set(kept) == ase_names and len(ase_names) == 4 * TINY_SPEC.encoder.args["n_blocks"]
    assert load_state_into(stage2, stage2.state_dict(), allow_missing_ase=True) == ()


def test_missing_ase_is_an_error_unless_allowed(tmp_path: Path, tiny_model_factory: Callable[..., AnySR]) -> None:
    path, _ = stage1_checkpoint(tmp_path, tiny_model_factory)
    stage2 = build_model(TINY_SPEC)
    before = state(stage2)
    with pytest.raises(CheckpointError, match=r"stage1\.safetensors.*missing tensors \[encoder\.blocks\.0\.ase\."):
        load_weights_into(path, stage2)
    for name, tensor in before.items():
        assert torch.equal(stage2.state_dict()[name], tensor), "a failed load must leave the model untouched"


def test_partly_missing_ase_is_an_error_even_when_allowed(tiny_model_factory: Callable[..., AnySR]) -> None:
    model = tiny_model_factory()
    tensors = {name: tensor for name, tensor in model.state_dict().items() if name != "encoder.blocks.1.ase.fc1.bias"}
    with pytest.raises(CheckpointError, match="only some ASE tensors are missing"):
        load_state_into(build_model(TINY_SPEC), tensors, allow_missing_ase=True)


def test_load_weights_into_rejects_a_differently_shaped_model(tmp_path: Path, tiny_model: AnySR) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tiny_model)
    wider = build_model(TINY_SPEC.replace_args(encoder={"n_feats": 20}))
    with pytest.raises(
        CheckpointError, match=r"decoder\.mlp\.layers\.0\.weight has shape \(32, 148\), expected \(32, 184\)"
    ):
        load_weights_into(path, wider)


#: A format-1 spec as the files written before the registry carry it: flat EDSR-baseline + LIIF fields.
FORMAT_1_SPEC = {
    "n_feats": 16,
    "n_blocks": 2,
    "ase": True,
    "interweave": True,
    "ase_chunk": 4,
    "ase_hidden": 16,
    "decoder_hidden": [32, 32],
    "slim_decoder": True,
    "widths": [0.5, 0.7, 0.9, 1.0],
}


def test_format_1_files_are_migrated_on_load(tiny_model: AnySR, tmp_path: Path) -> None:
    """A file written before the registry (flat spec, format "1") rebuilds the same model and outputs."""
    metadata = {**METADATA, "anysr.format": "1", "anysr.spec": json.dumps(FORMAT_1_SPEC)}
    path = write_raw(tmp_path / "old.safetensors", state(tiny_model), metadata)
    loaded, info = load_checkpoint(path)
    assert info.spec == RESOLVED == tiny_model.spec
    for ours, theirs in zip(outputs(loaded), outputs(tiny_model), strict=True):
        assert torch.equal(ours, theirs)
    # Saving it again writes format 2, which reads back the same.
    saved = save_checkpoint(tmp_path / "new.safetensors", loaded)
    assert saved.spec == info.spec


def test_format_1_paper_mode_and_ablations_map_to_part_arguments(tmp_path: Path) -> None:
    flat = {**FORMAT_1_SPEC, "slim_decoder": False, "ase": False, "interweave": False}
    model = build_model(resolve_spec(TINY_SPEC.replace_args(encoder={"ase": False})))
    metadata = {**METADATA, "anysr.format": "1", "anysr.spec": json.dumps(flat)}
    info = read_checkpoint_info(write_raw(tmp_path / "old.safetensors", state(model), metadata))
    assert info.spec.decoder.args["slim"] is False
    assert (info.spec.encoder.args["ase"], info.spec.encoder.args["interweave"]) == (False, False)


def test_format_1_spec_with_an_unknown_key_is_refused(tiny_model: AnySR, tmp_path: Path) -> None:
    metadata = {**METADATA, "anysr.format": "1", "anysr.spec": json.dumps({**FORMAT_1_SPEC, "attention": True})}
    path = write_raw(tmp_path / "old.safetensors", state(tiny_model), metadata)
    with pytest.raises(CheckpointError, match=r"unknown format-1 model spec keys: \['attention'\]"):
        load_checkpoint(path)


@pytest.mark.weights
def test_shipped_weights_are_format_1_and_load_unchanged() -> None:
    """The shipped files predate the registry; they must load through the migration, byte for byte as shipped."""
    weights = Path(__file__).resolve().parents[2] / "weights"
    for path in sorted(weights.glob("*.safetensors")):
        data = path.read_bytes()
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        assert header["__metadata__"]["anysr.format"] == "1", path
        info = read_checkpoint_info(path)
        assert (info.spec.encoder.name, info.spec.decoder.name) == ("edsr-baseline", "liif")
        assert info.spec.encoder.args["n_blocks"] == 16 and info.spec.decoder.args["hidden"] == [256] * 4


def test_parts_loads_only_the_encoder_under_a_new_decoder(
    tmp_path: Path, tiny_model_factory: Callable[..., AnySR]
) -> None:
    """How Meta-SR and SRNO start on the shipped LIIF base: the backbone's tensors are copied exactly, the
    new decoder keeps its own initialisation, and a stage-1 file's missing ASE is still allowed."""
    path, stage1 = stage1_checkpoint(tmp_path, tiny_model_factory)
    torch.manual_seed(0)
    target = build_model(ModelSpec(TINY_SPEC.encoder, tiny_spec("edsr-baseline", "metasr").decoder))
    decoder_before = {name: tensor.clone() for name, tensor in target.decoder.state_dict().items()}
    load_weights_into(path, target, allow_missing_ase=True, parts=("encoder",))
    for name, tensor in stage1.encoder.state_dict().items():
        assert torch.equal(target.encoder.state_dict()[name], tensor), name
    for name, tensor in decoder_before.items():
        assert torch.equal(target.decoder.state_dict()[name], tensor), name


def test_parts_refuses_an_unknown_part(tmp_path: Path, tiny_model_factory: Callable[..., AnySR]) -> None:
    path, _ = stage1_checkpoint(tmp_path, tiny_model_factory)
    with pytest.raises(CheckpointError, match=r"no part\(s\) \['backbone'\]"):
        load_weights_into(path, build_model(TINY_SPEC), allow_missing_ase=True, parts=("backbone",))


def test_drop_ase_seeds_a_plain_or_fresh_ase_model_from_a_stage2_file(
    tmp_path: Path, tiny_model_factory: Callable[..., AnySR]
) -> None:
    """A trained stage-2 file (ASE gates away from identity) seeds a stage-1 model (no ASE) and a fresh ASE
    model alike: every non-ASE tensor copied, ASE left at its identity initialisation."""
    stage2 = tiny_model_factory(seed=3)
    with torch.no_grad():
        for name, tensor in stage2.named_parameters():
            if ".ase." in name:
                tensor.add_(0.5)
    path = tmp_path / "stage2.safetensors"
    save_checkpoint(path, stage2, {"stage": 2})
    plain = build_model(TINY_SPEC.replace_args(encoder={"ase": False}))
    with pytest.raises(CheckpointError):
        load_weights_into(path, plain)
    load_weights_into(path, plain, drop_ase=True)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, stage2.state_dict()[name]), name
    fresh = build_model(TINY_SPEC)
    identity = {name: tensor.clone() for name, tensor in fresh.state_dict().items() if ".ase." in name}
    load_weights_into(path, fresh, drop_ase=True)
    for name, tensor in fresh.state_dict().items():
        expected = identity[name] if ".ase." in name else stage2.state_dict()[name]
        assert torch.equal(tensor, expected), name
