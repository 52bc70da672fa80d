"""cli/info.py, cli/flops.py, cli/upscale.py (and cli/common.py, cli/image_files.py) through ``anysr``'s main."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli.upscale
from cli.common import gflops
from cli.main import main
from models.anysr import AnySR, build_model
from models.checkpoint import load_checkpoint, save_checkpoint
from models.flops import count_flops
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS

TRAINING = {"stage": 2, "steps": 40, "data": ["T91"]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with active ASE gates (random W2), written once for the module."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = build_model(TINY_SPEC)
        with torch.no_grad():
            for block in model.encoder.blocks:
                block.ase.fc2.weight.normal_(0.0, 0.2)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_checkpoint(path, model, TRAINING)
    return path


@pytest.fixture(scope="module")
def tiny(checkpoint: Path) -> AnySR:
    return load_checkpoint(checkpoint)[0]


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--precision auto`` resolves to fp32 on every machine here, so outputs compare exactly; the probe
    that picks bf16 on CPUs with native bf16 is tested in tests/models/test_precision.py."""
    monkeypatch.setattr("models.precision.cpu_bf16_flags", lambda: [])


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """Save ``pixels`` as PNG; the array's shape and dtype pick the mode (RGB, RGBA, L, I;16)."""
    Image.fromarray(pixels).save(path)
    return path


def read_png(path: Path) -> tuple[np.ndarray, str, dict[str, str]]:
    """(pixels, mode, PNG text chunks) of a written file, closing it."""
    with Image.open(path) as image:
        return np.asarray(image), image.mode, dict(getattr(image, "text", {}))


def random_pixels(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def meta_model(spec: ModelSpec) -> AnySR:
    with torch.device("meta"):
        return build_model(spec)


def expected_rgb(model: AnySR, pixels: np.ndarray, out_size: tuple[int, int], width: float, scale: tuple) -> np.ndarray:
    """What the CLI must write: the model's output quantised to uint8, (H, W, 3)."""
    lr = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    out = model.upscale(lr, out_size, width, scale=scale)
    return out[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- flops


def test_flops_table_lists_every_width_and_marks_the_auto_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--lr", "64x48", "--scale", "2.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "64x48 -> 147x110" in lines[0] and "slim mode" in lines[0]
    rows = {float(line.split()[0]): line for line in lines[2:]}
    assert sorted(rows) == list(WIDTHS)
    assert "auto" in rows[0.7] and all("auto" not in rows[w] for w in WIDTHS if w != 0.7)
    total = count_flops(meta_model(ModelSpec()), (64, 48), (147, 110), 0.5).total
    assert rows[0.5].split()[3] == gflops(total)


def test_flops_json_matches_the_flops_model_for_non_square_paper_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["flops", "--lr", "40x50", "--scale-h", "1.3", "--scale-w", "2.7", "--mode", "paper", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out_size"] == [52, 135] and report["scale"] == [1.3, 2.7]
    assert report["auto_width"] == 0.9  # max(1.3, 2.7) is in (2.55, 3.25]
    spec = ModelSpec().replace_args(decoder={"slim": False})
    for row in report["widths"]:
        counted = count_flops(meta_model(spec), (40, 50), (52, 135), row["width"])
        assert (row["encoder_flops"], row["decoder_flops"], row["total_flops"]) == (
            counted.encoder,
            counted.decoder,
            counted.total,
        )
    assert report["widths"][-1]["ratio_to_full"] == 1.0


def test_flops_out_size_sets_the_scales(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--lr", "50x40", "--out", "150x100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scale"] == [3.0, 2.5] and report["out_size"] == [150, 100]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scale", "9"], r"scale along the height must be in (1, 8], got 9 (pass --allow-any-scale"),
        (["--scale", "1"], "must be in (1, 8], got 1"),
        (["--scale-h", "2"], "give a scale"),
        (["--scale", "2", "--out", "100x100"], "either --out or a scale"),
        (["--scale", "-2", "--allow-any-scale"], "must be a positive number, got -2"),
    ],
)
def test_flops_rejects_bad_scales_with_the_value_and_range(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["flops", "--lr", "32x32", *argv]) == 2
    assert message in capsys.readouterr().err


def test_allow_any_scale_relaxes_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--lr", "32x32", "--scale", "9", "--allow-any-scale", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out_size"] == [288, 288]


@pytest.mark.parametrize("size", ["0x5", "12xa", "1x2x3"])
def test_bad_sizes_are_usage_errors(capsys: pytest.CaptureFixture[str], size: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["flops", "--lr", size, "--scale", "2"])
    assert exit_info.value.code == 2
    assert "size" in capsys.readouterr().err


# ---------------------------------------------------------------- info


def test_info_without_weights_says_so_and_describes_the_default_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "none.safetensors"
    assert main(["info", "--weights", str(missing)]) == 0
    out = capsys.readouterr().out
    assert f"weights: NONE - no weights file at {missing}" in out
    assert "scale group S1 (<= 1.75)" in out and "scale group S4 (> 3.25)" in out
    assert main(["info", "--weights", str(missing), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] is None
    parameters = [row["parameters"] for row in report["widths"]]
    assert parameters == sorted(parameters) and len(set(parameters)) == len(WIDTHS)
    assert parameters[-1] == sum(p.numel() for p in build_model(ModelSpec()).parameters())
    assert [row["auto_for"] for row in report["widths"]] == [
        ["scale group S1 (<= 1.75)"],
        ["scale group S2 (1.75, 2.55]"],
        ["scale group S3 (2.55, 3.25]"],
        ["scale group S4 (> 3.25)"],
    ]
    assert report["parts"]["encoder"] == "edsr-baseline" and report["parts"]["decoder"] == "liif"
    assert report["parts"]["receptive_radius"] == 36 and report["parts"]["global_decoder"] is False


def test_info_reports_the_checkpoint_facts(capsys: pytest.CaptureFixture[str], checkpoint: Path) -> None:
    assert main(["info", "--weights", str(checkpoint), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    facts = report["weights"]
    assert facts["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert facts["training"] == TRAINING and facts["dtype"] == "float32"
    assert report["spec"]["encoder"]["args"]["n_feats"] == TINY_SPEC.encoder.args["n_feats"]
    by_width = {row["width"]: row["parameters"] for row in report["widths"]}
    assert by_width[1.0] == facts["parameters"]
    # TINY_SPEC at 0.5 (k = 8 of 16 channels, decoder 16/16), counted by hand: head 3·16·9+16 = 448;
    # per block conv1 8·16·9+8, conv2 16·8·9+16, ASE fc1 16·(8+2·2)+16, fc2 8·16+8 → 2672, ×2 blocks;
    # tail 16·16·9+16 = 2320; decoder 16·(144+4)+16, 16·16+16, 3·16+3 = 2707.
    assert by_width[0.5] == 448 + 2 * 2672 + 2320 + 2707
    assert main(["info", "--weights", str(checkpoint)]) == 0
    text = capsys.readouterr().out
    assert facts["sha256"] in text and "steps: 40" in text


def test_info_on_a_broken_file_fails_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    assert main(["info", "--weights", str(broken)]) == 1
    assert str(broken) in capsys.readouterr().err


# ---------------------------------------------------------------- upscale


def test_upscale_without_weights_says_so_and_exits_non_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = write_png(tmp_path / "in.png", random_pixels(6, 7, 3))
    target = tmp_path / "out.png"
    code = main(
        ["upscale", str(source), str(target), "--scale", "2", "--weights", str(tmp_path / "absent.safetensors")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no weights file at" in err and "--allow-untrained" in err
    assert not target.exists()


def test_upscale_writes_the_models_output_and_reports_width_flops_time(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path, tiny: AnySR
) -> None:
    pixels = random_pixels(6, 7, 3)
    source = write_png(tmp_path / "in.png", pixels)
    target = tmp_path / "out.png"
    assert main(["upscale", str(source), str(target), "--scale", "2", "--weights", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    written, mode, text = read_png(target)
    assert mode == "RGB" and written.shape == (12, 14, 3)
    np.testing.assert_array_equal(written, expected_rgb(tiny, pixels, (12, 14), 0.7, (2.0, 2.0)))
    assert f"wrote {target} (12x14 PNG) from {source} (6x7 RGB), scale 2 x 2" in out
    assert "width 0.7 (auto: scale 2 is in scale group S2 (1.75, 2.55])" in out
    flops = count_flops(tiny, (6, 7), (12, 14), 0.7)
    assert f"FLOPs {gflops(flops.total)} G" in out and "s inference on cpu" in out
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16] in out
    assert text["AnySR-Weights"] == "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_upscale_forced_width_and_non_square_scale(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path, tiny: AnySR
) -> None:
    pixels = random_pixels(5, 6, 3, seed=2)
    source = write_png(tmp_path / "in.png", pixels)
    target = tmp_path / "out.png"
    argv = ["upscale", str(source), str(target), "--scale-h", "1.3", "--scale-w", "2.7", "--width", "0.5"]
    assert main([*argv, "--weights", str(checkpoint)]) == 0
    assert "width 0.5 (forced by --width)" in capsys.readouterr().out
    written, _, _ = read_png(target)
    # The server's and evaluation's rule (models.geometry): round(5 · 1.3) = round(6.5) = 6, ties to even.
    assert written.shape == (6, 16, 3)
    np.testing.assert_array_equal(written, expected_rgb(tiny, pixels, (6, 16), 0.5, (1.3, 2.7)))


def test_upscale_keeps_alpha_where_the_format_can_and_drops_it_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path
) -> None:
    rgba = random_pixels(6, 6, 4, seed=3)
    source = write_png(tmp_path / "in.png", rgba)
    png, jpeg = tmp_path / "out.png", tmp_path / "out.jpg"
    assert main(["upscale", str(source), str(png), "--scale", "2", "--weights", str(checkpoint)]) == 0
    written, mode, _ = read_png(png)
    assert mode == "RGBA" and written.shape == (12, 12, 4)
    alpha = Image.fromarray(rgba[:, :, 3]).resize((12, 12), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(written[:, :, 3], np.asarray(alpha))
    capsys.readouterr()
    assert main(["upscale", str(source), str(jpeg), "--scale", "2", "--weights", str(checkpoint)]) == 0
    assert "alpha dropped" in capsys.readouterr().out
    with Image.open(jpeg) as written_jpeg:
        assert written_jpeg.mode == "RGB" and written_jpeg.size == (12, 12)


@pytest.mark.parametrize(("mode", "dtype", "note"), [("L", np.uint8, None), ("I;16", np.uint16, "more than 8 bits")])
def test_upscale_grey_input_gives_grey_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path, mode: str, dtype: type, note: str | None
) -> None:
    grey = np.random.default_rng(4).integers(0, np.iinfo(dtype).max, (5, 5), dtype=dtype)
    source = tmp_path / "in.png"
    write_png(source, grey)
    target = tmp_path / "out.png"
    assert main(["upscale", str(source), str(target), "--scale", "3", "--weights", str(checkpoint)]) == 0
    written, written_mode, _ = read_png(target)
    assert written_mode == "L" and written.shape == (15, 15)
    out = capsys.readouterr().out
    assert f"(5x5 {mode})" in out
    assert (note in out) if note else ("note:" not in out)


@pytest.mark.parametrize(
    ("extra", "name", "message"),
    [
        ([], "out.xyz", "extension '.xyz'"),
        (["--max-output-pixels", "100"], "out.png", "12x14 = 168 pixels exceeds --max-output-pixels 100"),
        (["--threads", "0"], "out.png", "--threads must be >= 1, got 0"),
        ([], "in.png", "OUT must differ from IN"),
    ],
)
def test_upscale_rejects_bad_requests_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path, extra: list[str], name: str, message: str
) -> None:
    source = write_png(tmp_path / "in.png", random_pixels(6, 7, 3))
    before = source.read_bytes()
    target = tmp_path / name
    code = main(["upscale", str(source), str(target), "--scale", "2", "--weights", str(checkpoint), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert source.read_bytes() == before
    assert target == source or not target.exists()


def test_upscale_reports_undecodable_input_and_broken_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path
) -> None:
    garbage = tmp_path / "in.png"
    garbage.write_bytes(b"definitely not a PNG")
    assert main(["upscale", str(garbage), str(tmp_path / "o.png"), "--scale", "2", "--weights", str(checkpoint)]) == 2
    assert "cannot decode" in capsys.readouterr().err
    source = write_png(tmp_path / "ok.png", random_pixels(4, 4, 3))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(checkpoint.read_bytes()[:100])
    assert main(["upscale", str(source), str(tmp_path / "o.png"), "--scale", "2", "--weights", str(broken)]) == 1
    assert str(broken) in capsys.readouterr().err


def test_upscale_allow_untrained_labels_everything(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = write_png(tmp_path / "in.png", random_pixels(4, 5, 3))
    target = tmp_path / "out.png"
    argv = ["upscale", str(source), str(target), "--scale", "1.5", "--allow-untrained"]
    assert main([*argv, "--weights", str(tmp_path / "absent.safetensors")]) == 0
    captured = capsys.readouterr()
    assert "weights: UNTRAINED" in captured.out and "WARNING: UNTRAINED" in captured.err
    assert "width 0.5 (auto" in captured.out
    written, _, text = read_png(target)
    assert written.shape == (6, 8, 3) and text["AnySR-Weights"].startswith("UNTRAINED")


def test_upscale_progress_bar_goes_to_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.upscale, "PROGRESS_MIN_PIXELS", 1)
    source = write_png(tmp_path / "in.png", random_pixels(4, 4, 3))
    assert main(["upscale", str(source), str(tmp_path / "o.png"), "--scale", "2", "--weights", str(checkpoint)]) == 0
    captured = capsys.readouterr()
    assert "upscale" in captured.err and "px" in captured.err
    assert "px" not in captured.out


def test_upscale_bf16_stays_close_to_fp32(capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path) -> None:
    source = write_png(tmp_path / "in.png", random_pixels(5, 5, 3, seed=5))
    outputs = []
    for extra in (["--precision", "fp32"], ["--precision", "bf16"]):
        target = tmp_path / f"out-{extra[-1]}.png"
        assert main(["upscale", str(source), str(target), "--scale", "2", "--weights", str(checkpoint), *extra]) == 0
        outputs.append(read_png(target)[0].astype(int))
    assert "bf16" in capsys.readouterr().out
    assert np.abs(outputs[0] - outputs[1]).max() <= 8  # a few 8-bit levels: bf16 keeps 8 mantissa bits


def test_upscale_auto_runs_what_the_probe_picked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU whose probe finds bf16 fast and close, ``--precision auto`` writes the bf16 image and says why."""
    monkeypatch.setattr("models.precision.cpu_bf16_flags", lambda: ["amx_bf16"])
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr("models.precision.probe_bf16", lambda model, device: {"speedup": 3.0, "agreement_db": 70.0})
    source = write_png(tmp_path / "in.png", random_pixels(6, 5, 3, seed=2))
    outputs = {}
    for precision in ("auto", "bf16", "fp32"):
        target = tmp_path / f"out-{precision}.png"
        argv = ["upscale", str(source), str(target), "--scale", "2", "--weights", str(checkpoint)]
        assert main([*argv, "--precision", precision, "--quiet"]) == 0
        outputs[precision] = read_png(target)[0]
        if precision == "auto":
            assert "precision auto: bf16 3.00x fp32's speed, within 70.0 dB" in capsys.readouterr().out
    assert np.array_equal(outputs["auto"], outputs["bf16"]) and not np.array_equal(outputs["auto"], outputs["fp32"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_upscale_cuda_without_a_gpu_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint: Path
) -> None:
    source = write_png(tmp_path / "in.png", random_pixels(4, 4, 3))
    argv = ["upscale", str(source), str(tmp_path / "o.png"), "--scale", "2", "--weights", str(checkpoint)]
    assert main([*argv, "--device", "cuda"]) == 2
    assert "'cuda' requested but CUDA is not available" in capsys.readouterr().err


# ---------------------------------------------------------------- models


def test_models_lists_the_registered_parts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    encoders = {part["name"]: part for part in report["encoders"]}
    decoders = {part["name"]: part for part in report["decoders"]}
    assert {"edsr-baseline", "rdn"} <= set(encoders)
    assert {"liif", "metasr", "srno", "arbsr"} <= set(decoders)
    assert encoders["edsr-baseline"]["widths"] == [0.5, 0.7, 0.9, 1.0]
    assert encoders["rdn"]["widths"] == [0.7, 0.8, 0.9, 1.0]
    assert encoders["edsr-baseline"]["args"]["n_blocks"] == 16
    assert decoders["srno"]["global"] is True and decoders["srno"]["query_mode"] == "grid"
    assert decoders["liif"]["slim"] is True and decoders["arbsr"]["slim"] is False
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "rdn" in text and "widths 0.7/0.8/0.9/1.0" in text and "global: served whole-image" in text


def test_flops_for_named_parts_and_the_parts_own_widths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--lr", "32x32", "--scale", "2", "--encoder", "rdn", "--decoder", "metasr", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "rdn+metasr" and [row["width"] for row in report["widths"]] == [0.7, 0.8, 0.9, 1.0]
    totals = [row["total_flops"] for row in report["widths"]]
    assert totals == sorted(totals) and report["auto_width"] == 0.8
    assert main(["flops", "--lr", "32x32", "--scale", "2", "--decoder", "arbsr", "--mode", "paper"]) == 2
    assert "has no hidden width to slice" in capsys.readouterr().err
    assert main(["flops", "--lr", "32x32", "--scale", "2", "--decoder", "nerf"]) == 2
    assert "unknown decoder 'nerf'" in capsys.readouterr().err
