"""Build ``docs/paper-tables.md``: the paper's Tables 1–5 (Set5 and Set14 columns) beside ours, Fig. 4-style
plots, and the budget behind each trained row.

Why a generator rather than a hand-written page: every number must come from a committed evaluation file
(``weights/rows/eval/<row>/...``) and a committed checkpoint (its metadata records the training config and
steps), so the page can be rebuilt and checked. A cell with no evaluation says why, instead of staying blank.

    python -m tools.paper_tables    # writes docs/paper-tables.md and docs/paper-tables/*.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from models.anysr import AnySR
    from models.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
ROWS_DIR = ROOT / "weights" / "rows"
EVAL_DIR = ROWS_DIR / "eval"
DOC = ROOT / "docs" / "paper-tables.md"
PLOTS = ROOT / "docs" / "paper-tables"
SCALES = (2, 3, 4)
DATASETS = ("Set5", "Set14")
#: Table 3's setting: one output size for every scale (480², see docs/models.md on how it was found).
TABLE3_OUT = 480

# The paper's numbers (Set5 ×2/×3/×4, Set14 ×2/×3/×4), transcribed from ../shared/docs/anysr-paper.txt.
PAPER_T1: dict[str, dict[str, tuple[float, ...]]] = {
    "EDSR": {
        "MetaSR*": (37.89, 34.35, 32.08, 33.57, 30.29, 28.52),
        "MetaSR†": (37.85, 34.40, 32.17, 33.44, 30.28, 28.55),
        "LIIF": (37.99, 34.40, 32.24, 33.66, 30.34, 28.62),
        "LIIF†": (37.88, 34.34, 32.21, 33.53, 30.32, 28.61),
        "ArbSR*": (37.97, 34.39, 32.07, 33.70, 30.31, 28.56),
        "ArbSR†": (37.87, 34.34, 32.05, 33.46, 30.28, 28.53),
        "SRNO": (38.15, 34.53, 32.39, 33.83, 30.50, 28.79),
        "SRNO†": (38.04, 34.50, 32.38, 33.74, 30.47, 28.78),
    },
    "RDN": {
        "MetaSR": (38.22, 34.63, 32.38, 33.98, 30.54, 28.78),
        "MetaSR†": (38.13, 34.57, 32.51, 33.94, 30.50, 28.83),
        "LIIF": (38.17, 34.68, 32.50, 33.97, 30.53, 28.80),
        "LIIF†": (38.15, 34.58, 32.49, 33.84, 30.49, 28.82),
        "ArbSR*": (38.10, 34.57, 32.26, 33.83, 30.46, 28.68),
        "ArbSR†": (38.01, 34.43, 32.31, 33.61, 30.37, 28.70),
        "SRNO": (38.32, 34.84, 32.69, 34.27, 30.71, 28.97),
        "SRNO†": (38.18, 34.73, 32.72, 34.03, 30.60, 28.98),
    },
}
PAPER_T2: dict[str, dict[str, tuple[float, ...]]] = {
    "EDSR": {
        "MetaSR*": (37.89, 34.35, 32.08, 33.57, 30.29, 28.52),
        "MetaSR‡": (37.89, 34.40, 32.17, 33.58, 30.32, 28.55),
        "LIIF": (37.99, 34.40, 32.24, 33.66, 30.34, 28.62),
        "LIIF‡": (37.98, 34.37, 32.21, 33.62, 30.35, 28.61),
        "ArbSR*": (37.97, 34.39, 32.07, 33.70, 30.31, 28.56),
        "ArbSR‡": (37.93, 34.35, 32.05, 33.65, 30.30, 28.53),
        "SRNO": (38.15, 34.53, 32.39, 33.83, 30.50, 28.79),
        "SRNO‡": (38.12, 34.51, 32.38, 33.81, 30.49, 28.78),
    },
    "RDN": {
        "MetaSR": (38.22, 34.63, 32.38, 33.98, 30.54, 28.78),
        "MetaSR‡": (38.19, 34.72, 32.51, 33.94, 30.59, 28.83),
        "LIIF": (38.17, 34.68, 32.50, 33.97, 30.53, 28.80),
        "LIIF‡": (38.19, 34.66, 32.49, 33.99, 30.54, 28.82),
        "ArbSR*": (38.10, 34.57, 32.26, 33.83, 30.46, 28.68),
        "ArbSR‡": (38.05, 34.59, 32.31, 33.80, 30.47, 28.70),
        "SRNO": (38.32, 34.84, 32.69, 34.27, 30.71, 28.97),
        "SRNO‡": (38.27, 34.83, 32.72, 34.23, 30.69, 28.98),
    },
}
#: Table 3 (Set14, SRNO on EDSR): params (M), then (PSNR, GFLOPs) at ×2, ×3, ×4.
PAPER_T3: dict[str, tuple[float, tuple[tuple[float, float], ...]]] = {
    "SRNO": (1.22, ((33.83, 141.28), (30.50, 62.50), (28.79, 35.28))),
    "SRNO†": (1.50, ((33.74, 97.93), (30.47, 55.54), (28.78, 35.06))),
    "SRNO‡": (1.50, ((33.81, 140.40), (30.49, 62.12), (28.78, 35.06))),
}
PAPER_T4: dict[str, tuple[float, ...]] = {
    "AnySR†": (38.04, 34.50, 32.38, 33.74, 30.47, 28.78),
    "AnySR† (w/o ASE)": (38.01, 34.51, 32.34, 33.72, 30.43, 28.73),
    "AnySR† (w/o FI)": (38.00, 34.47, 32.33, 33.71, 30.42, 28.73),
    "AnySR‡": (38.12, 34.51, 32.38, 33.81, 30.49, 28.78),
    "AnySR‡ (w/o ASE)": (38.10, 34.52, 32.34, 33.76, 30.45, 28.73),
    "AnySR‡ (w/o FI)": (38.10, 34.48, 32.33, 33.76, 30.45, 28.73),
}
PAPER_T5: dict[str, tuple[float, ...]] = {
    "0": (38.06, 34.47, 32.37, 33.76, 30.46, 28.77),
    "0.2": (38.07, 34.47, 32.37, 33.78, 30.46, 28.76),
    "0.4": (38.08, 34.48, 32.37, 33.78, 30.46, 28.77),
    "0.6": (38.12, 34.51, 32.38, 33.81, 30.49, 28.78),
    "0.8": (38.11, 34.51, 32.38, 33.80, 30.49, 28.77),
}

# Why a cell of ours is empty: said once, referenced from each table.
NOT_TRAINED = {
    "ArbSR": "not trained: ArbSR adapts the backbone as well, and its stage 1 alone needs more than this CPU budget",
    "RDN": "not trained: RDN-backbone rows need their own stage-1 base, and RDN costs 18x EDSR-baseline's FLOPs per "
    "LR pixel (`anysr flops --encoder rdn`); no GPU was lent for it",
}


@dataclass(frozen=True)
class Row:
    """One trained row of ours: where its weights and evaluations live, and what it stands for."""

    key: str
    label: str
    weights: Path
    #: Where its ×2/×3/×4 scores and its 30-scale scan live when not in ``EVAL_DIR`` (the shipped file's).
    evaluation: Path | None = None
    scan_evaluation: Path | None = None

    @property
    def x234(self) -> Path:
        return self.evaluation or EVAL_DIR / self.key / "x234.json"

    @property
    def scan(self) -> Path:
        return self.scan_evaluation or EVAL_DIR / self.key / "scan.json"


def rows() -> dict[str, Row]:
    """Every row the tables can cite. The stage-1 files are the paper's "vanilla" methods at our budget."""
    table = [
        Row(
            "liif-shipped",
            "LIIF† / ‡ (shipped, long budget)",
            ROOT / "weights" / "anysr-edsr-liif.safetensors",
            ROOT / "weights" / "eval" / "eval.json",
            ROOT / "weights" / "eval" / "h200-sweep" / "eval.json",  # every width, 30 scales, on an H200
        ),
    ]
    for key, label in [
        ("liif-stage1", "LIIF (stage 1)"),
        ("metasr-stage1", "Meta-SR (stage 1)"),
        ("metasr", "Meta-SR AnySR (paper mode: the decoder is not sliced)"),
        ("metasr-slim", "Meta-SR AnySR, slim decoder (scored, not shipped)"),
        ("metasr-long", "Meta-SR AnySR (paper mode), 3× stage 2, the ×1.1–1.7 group drawn 2:1:1:1"),
        ("srno-stage1", "SRNO (stage 1)"),
        ("srno", "SRNO AnySR"),
        ("liif-p0.6", "LIIF AnySR, p = 0.6"),
        ("liif-p0", "LIIF AnySR, p = 0"),
        ("liif-p0.2", "LIIF AnySR, p = 0.2"),
        ("liif-p0.4", "LIIF AnySR, p = 0.4"),
        ("liif-p0.8", "LIIF AnySR, p = 0.8"),
        ("liif-no-ase", "LIIF AnySR w/o ASE"),
        ("liif-no-fi", "LIIF AnySR w/o FI"),
    ]:
        table.append(Row(key, label, ROWS_DIR / f"{key}.safetensors"))
    return {row.key: row for row in table}


def load_summary(path: Path) -> dict[tuple[str, float, str], float]:
    """(dataset, scale, row) → mean PSNR, from an ``anysr eval`` JSON; row is ``auto``, ``w=1.0`` or
    ``bicubic``. Square scales only (the tables have no others)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    table: dict[tuple[str, float, str], float] = {}
    for item in data["summary"]:
        scale_h, scale_w = item["scale"]
        if scale_h == scale_w:
            table[(item["dataset"], round(float(scale_h), 2), item["row"])] = float(item["psnr"])
    return table


def six(summary: dict[tuple[str, float, str], float], row: str) -> tuple[float | None, ...]:
    """Set5 ×2/×3/×4 then Set14 ×2/×3/×4 of one evaluation row (None where not evaluated)."""
    return tuple(summary.get((dataset, float(scale), row)) for dataset in DATASETS for scale in SCALES)


def fmt(value: float | None, reference: float | None = None) -> str:
    if value is None:
        return "—"
    if reference is None:
        return f"{value:.2f}"
    delta = value - reference
    return f"{value:.2f} ({0.0 if abs(delta) < 0.005 else delta:+.2f})"  # no "-0.00"


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


SIX_HEADER = ("Set5 ×2", "Set5 ×3", "Set5 ×4", "Set14 ×2", "Set14 ×3", "Set14 ×4")


def training_line(row: Row) -> str:
    """Budget of one row from its checkpoint's own record: steps × batch × patch, seconds, start point."""
    from models.checkpoint import read_checkpoint_info

    config_file = row.x234.parent / "train-config.json"
    if row.x234.exists() and config_file.exists():  # shipped or not: the evaluation and the run's config
        training = json.loads(row.x234.read_text())["weights"].get("training") or {}
        config = json.loads(config_file.read_text())
    elif row.weights.exists():
        training = read_checkpoint_info(row.weights).training or {}
        config = training.get("config")
    else:
        return f"`{row.key}`: not trained"
    if not config:
        return f"`{row.key}`: see weights/MODEL_CARD.md (trained before checkpoints recorded their config)"
    if row.key == "liif-shipped":
        return "`liif-shipped`: a six-link chain, 470,320 patches of 48² in all; see weights/MODEL_CARD.md"
    start = config.get("init_from") or "scratch"
    reset = f"p = {config['reset_p']}, " if config["stage"] == 2 else ""
    if config.get("group_weights"):
        reset += f"groups drawn {':'.join(f'{w:g}' for w in config['group_weights'])}, "
    parts = "" if config.get("init_parts", "all") == "all" else f" ({config['init_parts']} only)"
    parts += ", its ASE dropped" if config.get("init_drop_ase") else ""
    return (
        f"`{row.key}`: stage {config['stage']}, {training['step']} steps × batch {config['batch_size']} of "
        f"{config['patch']}² LR patches ({config['queries']} queries), lr {config['lr']:g} (cosine from "
        f"{config['decay_start']:.0%}), {reset}{'bf16' if config['bf16'] else 'fp32'}, "
        f"{training['elapsed_s']:.0f} s; from `{start}`{parts}"
    )


def ours_six(row: Row, which: str) -> tuple[float | None, ...]:
    return six(load_summary(row.x234), which)


#: Extra rows of a method in Tables 1 and 2, by key suffix: not at the table's equal budget, so labelled.
VARIANTS = {
    "-slim": "slim decoder",
    "-long": "3× the stage-2 steps, ×1.1–1.7 drawn 2:1:1:1; not the equal budget",
}


def table_1_2(all_rows: dict[str, Row], dagger: str) -> list[str]:
    """Table 1 (dagger = "†": subnets, the scale group's width) or Table 2 ("‡": full width)."""
    which = "auto" if dagger == "†" else "w=1.0"
    paper = PAPER_T1 if dagger == "†" else PAPER_T2
    body: list[list[str]] = []
    for method, vanilla_key, anysr_key in [
        ("MetaSR", "metasr-stage1", "metasr"),
        ("LIIF", "liif-stage1", "liif-p0.6"),
        ("ArbSR", None, None),
        ("SRNO", "srno-stage1", "srno"),
    ]:
        names = [name for name in paper["EDSR"] if name.rstrip("*†‡") == method]
        vanilla_paper, anysr_paper = (paper["EDSR"][name] for name in names)
        if vanilla_key is None or anysr_key is None:
            reason = NOT_TRAINED[method]
            body.append([f"EDSR {names[0]}", "paper", *map(fmt, vanilla_paper)])
            body.append([f"EDSR {names[1]}", "paper", *map(fmt, anysr_paper)])
            body.append([f"EDSR {method}", "ours", reason, "", "", "", "", ""])
            continue
        vanilla = ours_six(all_rows[vanilla_key], "w=1.0")
        anysr = ours_six(all_rows[anysr_key], which)
        body.append([f"EDSR {names[0]}", "paper", *map(fmt, vanilla_paper)])
        body.append([f"EDSR {names[0]}", f"ours (`{vanilla_key}`)", *map(fmt, vanilla)])
        body.append([f"EDSR {names[1]}", "paper", *(fmt(a, b) for a, b in zip(anysr_paper, vanilla_paper))])
        body.append([f"EDSR {names[1]}", f"ours (`{anysr_key}`)", *(fmt(a, b) for a, b in zip(anysr, vanilla))])
        for suffix, note in VARIANTS.items():
            variant = all_rows.get(f"{anysr_key}{suffix}")
            if variant is not None and variant.x234.exists():
                scores = ours_six(variant, which)
                label = f"ours (`{variant.key}`, {note})"
                body.append([f"EDSR {names[1]}", label, *(fmt(a, b) for a, b in zip(scores, vanilla))])
    shipped = ours_six(all_rows["liif-shipped"], which)
    body.append([f"EDSR LIIF{dagger}", "ours, shipped (long budget)", *map(fmt, shipped)])
    body.append(["RDN (all four methods)", "ours", NOT_TRAINED["RDN"], "", "", "", "", ""])
    return markdown_table(("row", "source", *SIX_HEADER), body)


def architecture(spec: ModelSpec) -> AnySR:
    """The model a spec describes, on the meta device: parameter counts and FLOPs without loading weights."""
    from models.anysr import build_model

    with torch.device("meta"):
        return build_model(spec)


def table_3(all_rows: dict[str, Row]) -> list[str]:
    """SRNO on EDSR, Set14: parameters, PSNR and FLOPs at one output size (480²) for every scale.

    Parameters and FLOPs need only the architecture, which each evaluation records (``weights.spec``), so
    the unshipped stage-1 file counts too."""
    from models.flops import count_flops
    from models.spec import ModelSpec

    vanilla_row, anysr_row = all_rows["srno-stage1"], all_rows["srno"]
    if not (vanilla_row.x234.exists() and anysr_row.x234.exists()):
        return ["(SRNO rows not trained: no Table 3.)"]
    body = []
    for label, row, which in [
        ("ours SRNO (stage 1)", vanilla_row, "w=1.0"),
        ("ours SRNO†", anysr_row, "auto"),
        ("ours SRNO‡", anysr_row, "w=1.0"),
    ]:
        record = json.loads(row.x234.read_text())
        model = architecture(ModelSpec.from_dict(record["weights"]["spec"]))
        summary = load_summary(row.x234)
        params = sum(p.numel() for p in model.parameters())
        encoder_params = sum(p.numel() for p in model.encoder.parameters())
        cells = [label, f"{encoder_params / 1e6:.2f} / {params / 1e6:.2f}"]
        for scale in SCALES:
            lr = TABLE3_OUT // scale
            width = 1.0 if which == "w=1.0" else model.width_for_scale(scale)
            flops = count_flops(model, (lr, lr), (TABLE3_OUT, TABLE3_OUT), width)
            psnr = summary.get(("Set14", float(scale), which))
            cells += [fmt(psnr), f"{flops.encoder / 1e9:.2f} / {flops.total / 1e9:.2f}"]
        body.append(cells)
    paper_body = []
    for label, (params_m, cells3) in PAPER_T3.items():
        paper_cells = [x for psnr, gflops in cells3 for x in (fmt(psnr), f"{gflops:.2f}")]
        paper_body.append([f"paper {label}", f"{params_m:.2f}", *paper_cells])
    header = (
        "row",
        "params M (encoder / all)",
        "×2 PSNR",
        "×2 GFLOPs (encoder / all)",
        "×3 PSNR",
        "×3 GFLOPs",
        "×4 PSNR",
        "×4 GFLOPs",
    )
    return markdown_table(header, paper_body + body)


def table_4(all_rows: dict[str, Row]) -> list[str]:
    body = []
    for dagger, which in (("†", "auto"), ("‡", "w=1.0")):
        for suffix, key in (("", "liif-p0.6"), (" (w/o ASE)", "liif-no-ase"), (" (w/o FI)", "liif-no-fi")):
            label = f"AnySR{dagger}{suffix}"
            body.append([label, "paper (SRNO)", *map(fmt, PAPER_T4[label])])
            body.append([label, f"ours (LIIF, `{key}`)", *map(fmt, ours_six(all_rows[key], which))])
    return markdown_table(("setting", "source", *SIX_HEADER), body)


def table_5(all_rows: dict[str, Row]) -> list[str]:
    body = []
    for p, values in PAPER_T5.items():
        body.append([f"AnySR‡ (p = {p})", "paper (SRNO)", *map(fmt, values)])
        key = f"liif-p{p}"
        body.append([f"AnySR‡ (p = {p})", f"ours (LIIF, `{key}`)", *map(fmt, ours_six(all_rows[key], "w=1.0"))])
        body.append([f"AnySR† (p = {p})", f"ours (LIIF, `{key}`)", *map(fmt, ours_six(all_rows[key], "auto"))])
    return markdown_table(("setting", "source", *SIX_HEADER), body)


#: Repeats of the common ablation row (``liif-p0.6``, seed 11) with other seeds: other patches and scales
#: in another order, same start and budget. Only their evaluations are kept (``EVAL_DIR/<key>/x234.json``).
SEED_REPEATS = ("liif-p0.6-seed12", "liif-p0.6-seed13")


def seed_spread() -> list[str]:
    """Table 4/5's noise floor: the same row trained with three seeds, each cell's values and their range.

    A difference between two single-seed rows smaller than this range is not evidence of anything."""
    keys = ("liif-p0.6", *SEED_REPEATS)
    runs = {key: load_summary(EVAL_DIR / key / "x234.json") for key in keys}
    present = [key for key in keys if runs[key]]
    if len(present) < 2:
        return ["(fewer than two seeds evaluated: no spread to report.)"]
    body = []
    for dagger, which in (("‡", "w=1.0"), ("†", "auto")):
        per_seed = [six(runs[key], which) for key in present]
        for key, values in zip(present, per_seed):
            body.append([f"AnySR{dagger}, `{key}`", *map(fmt, values)])
        spread = []
        for cell in zip(*per_seed):
            known = [value for value in cell if value is not None]
            spread.append(f"{max(known) - min(known):.2f}" if len(known) >= 2 else "—")
        body.append([f"AnySR{dagger}: range over {len(present)} seeds", *spread])
    return markdown_table(("run", *SIX_HEADER), body)


def shipped_rows(all_rows: dict[str, Row]) -> list[str]:
    """Every servable file: Set14 PSNR at the served (group) width beside the GFLOPs it costs for one 256²
    output, so "better per FLOP" can be read off against the default LIIF file."""
    from models.checkpoint import read_checkpoint_info
    from models.flops import count_flops

    body = []
    for row in all_rows.values():
        summary = load_summary(row.x234)
        if not row.weights.exists() or not summary:
            continue
        info = read_checkpoint_info(row.weights)  # FLOPs need the architecture only, not the weights
        model = architecture(info.spec)
        cells = [f"`{row.weights.relative_to(ROOT)}`", info.spec.label, f"{info.parameter_count / 1e6:.2f}"]
        for scale in SCALES:
            out = 256
            lr = round(out / scale)
            gflops = count_flops(model, (lr, lr), (out, out), model.width_for_scale(scale)).total / 1e9
            psnr = summary.get(("Set14", float(scale), "auto"))
            cells.append(f"{fmt(psnr)} / {gflops:.1f}")
        body.append(cells)
    return markdown_table(("file", "parts", "params M", "Set14 ×2 † dB / GFLOPs", "×3", "×4"), body)


def bicubic_margins(all_rows: dict[str, Row]) -> list[str]:
    """Worst margin over bicubic of each row across the 30-scale scan at the served (group) width, per set."""
    body = []
    for row in all_rows.values():
        summary = load_summary(row.scan)
        if not summary:
            body.append([f"`{row.key}`", "not scanned (compute)", ""])
            continue
        cells = [f"`{row.key}`"]
        for dataset in DATASETS:
            for which in ("auto",):
                margins = [
                    (value - summary[(d, s, "bicubic")], s)
                    for (d, s, r), value in summary.items()
                    if d == dataset and r == which and (d, s, "bicubic") in summary
                ]
                if not margins:
                    cells.append("—")
                    continue
                worst, at = min(margins)
                cells.append(f"{worst:+.2f} dB at ×{at:g} ({len(margins)} scales)")
        body.append(cells)
    return markdown_table(("row", "Set5 † (served width)", "Set14 † (served width)"), body)


def plot_scans(all_rows: dict[str, Row]) -> list[str]:
    """Fig. 4 style: PSNR against scale for bicubic, † and ‡, one PNG per row (×2/×3/×4 alone where the
    30-scale scan did not fit the compute)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in all_rows.values():
        scanned = load_summary(row.scan)
        summary = {**load_summary(row.x234), **scanned}  # full width (‡) is scored at ×2/×3/×4 only
        if not summary:
            continue
        figure, axes = plt.subplots(1, len(DATASETS), figsize=(10, 3.6))
        for axis, dataset in zip(axes, DATASETS, strict=True):
            for which, label in (("bicubic", "bicubic"), ("auto", "† (group width)"), ("w=1.0", "‡ (full width)")):
                points = sorted((s, v) for (d, s, r), v in summary.items() if d == dataset and r == which)
                if points:
                    axis.plot(*zip(*points), marker=".", label=label)
            axis.set_title(f"{row.key}: {dataset}" + ("" if scanned else " (×2/×3/×4 only: not scanned)"))
            axis.set_xlabel("scale")
            axis.set_ylabel("PSNR (dB, Y)")
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        name = f"{row.key}.png"
        figure.savefig(PLOTS / name, dpi=90)
        plt.close(figure)
        lines.append(f"![{row.key}: PSNR against scale](paper-tables/{name})")
    return lines


def build(template: Path) -> str:
    """The page: the hand-written prose of ``template`` with each ``<!-- table:NAME -->`` marker filled."""
    all_rows = rows()
    generated = {
        "table1": table_1_2(all_rows, "†"),
        "table2": table_1_2(all_rows, "‡"),
        "table3": table_3(all_rows),
        "table4": table_4(all_rows),
        "table5": table_5(all_rows),
        "seeds": seed_spread(),
        "margins": bicubic_margins(all_rows),
        "rows": shipped_rows(all_rows),
        "fig4": plot_scans(all_rows),
        "budgets": ["- " + training_line(row) for row in all_rows.values()],
    }
    out = []
    for line in template.read_text().splitlines():
        marker = line.strip()
        if marker.startswith("<!-- table:") and marker.endswith("-->"):
            name = marker[len("<!-- table:") : -len("-->")].strip()
            out += generated[name]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=ROOT / "tools" / "paper_tables.md.in")
    args = parser.parse_args(argv)
    DOC.write_text(build(args.template))
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
