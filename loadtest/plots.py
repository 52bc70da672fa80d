"""PNG plots of a results file (matplotlib, Agg backend: no display needed).

- ``latency_throughput.png``: p50 and p99 latency against achieved throughput, one line pair per policy;
- ``width_mix.png``: share of successful requests at each width against offered load, one panel per policy;
- ``goodput.png``: goodput against offered load per policy, with the ideal (goodput = offered) line;
- ``overload_timeline.png``: every request of the overload run, latency against its scheduled time,
  coloured by width, refusals and failures marked, segment boundaries drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
from matplotlib.figure import Figure  # noqa: E402

WIDTH_COLOURS = {"0.5": "#d62728", "0.7": "#ff7f0e", "0.9": "#2ca02c", "1.0": "#1f77b4"}
POLICY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _points(steps: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(step[x], step[y]) for step in steps if step.get(x) is not None and step.get(y) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_latency_throughput(runs: list[dict[str, Any]], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, run in enumerate(runs):
        colour = POLICY_COLOURS[index % len(POLICY_COLOURS)]
        for key, style, name in (("latency_p50_s", "-o", "p50"), ("latency_p99_s", "--^", "p99")):
            xs, ys = _points(run["steps"], "achieved_rps", key)
            axes.plot(xs, ys, style, color=colour, label=f"{run['policy']} {name}")
    axes.set_yscale("log")
    axes.set_xlabel("achieved throughput (successful requests/s)")
    axes.set_ylabel("latency (s, log scale)")
    axes.set_title("Latency vs throughput")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_width_mix(runs: list[dict[str, Any]], path: Path) -> Path:
    figure, all_axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.8), sharey=True, squeeze=False)
    for axes, run in zip(all_axes[0], runs):
        steps = run["steps"]
        positions = list(range(len(steps)))
        bottom = [0.0] * len(steps)
        widths = sorted({w for step in steps for w in step["width_mix"]} | set(WIDTH_COLOURS))
        for width in widths:
            shares = [step["width_mix"].get(width, 0.0) for step in steps]
            axes.bar(positions, shares, bottom=bottom, color=WIDTH_COLOURS.get(width, "grey"), label=f"width {width}")
            bottom = [b + s for b, s in zip(bottom, shares)]
        axes.set_xticks(positions, [f"{step['offered_rps']:.2g}" for step in steps])
        axes.set_xlabel("offered load (requests/s)")
        axes.set_title(run["policy"])
        axes.set_ylim(0, 1)
    all_axes[0][0].set_ylabel("share of successful requests")
    all_axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.suptitle("Width mix vs offered load")
    return _save(figure, path)


def plot_goodput(runs: list[dict[str, Any]], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    top = 0.0
    for index, run in enumerate(runs):
        xs, ys = _points(run["steps"], "offered_rps", "goodput_rps")
        axes.plot(xs, ys, "-o", color=POLICY_COLOURS[index % len(POLICY_COLOURS)], label=run["policy"])
        top = max([top, *xs])
    axes.plot([0, top], [0, top], ":", color="grey", label="goodput = offered")
    deadline = next((step["goodput_deadline_s"] for run in runs for step in run["steps"]), None)
    axes.set_xlabel("offered load (requests/s)")
    axes.set_ylabel("goodput (requests/s within deadline)")
    axes.set_title(f"Goodput vs offered load (deadline {deadline:g} s)" if deadline else "Goodput vs offered load")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_overload_timeline(runs: list[dict[str, Any]], path: Path) -> Path:
    with_overload = [run for run in runs if run.get("overload")]
    figure, all_axes = plt.subplots(
        len(with_overload), 1, figsize=(8, 2.8 * len(with_overload)), sharex=True, sharey=True, squeeze=False
    )
    for axes, run in zip(all_axes[:, 0], with_overload):
        overload = run["overload"]
        rows = overload.get("timeline", [])
        for width, colour in WIDTH_COLOURS.items():
            points = [
                (t, lat) for t, lat, outcome, w in rows if outcome == "200" and w is not None and f"{w:.1f}" == width
            ]
            if points:
                axes.scatter(*zip(*points), s=6, color=colour, label=f"width {width}")
        failed = [(t, lat) for t, lat, outcome, _ in rows if outcome != "200" and lat is not None]
        if failed:
            axes.scatter(*zip(*failed), s=10, marker="x", color="black", label="refused / failed")
        spec = overload["spec"]
        for boundary in (spec["baseline_s"], spec["baseline_s"] + spec["overload_s"]):
            axes.axvline(boundary, color="grey", linestyle="--", linewidth=1)
        deadline = overload["segments"]["overload"].get("goodput_deadline_s")
        if deadline:
            axes.axhline(deadline, color="red", linestyle=":", linewidth=1, label=f"{deadline:g} s deadline")
        axes.set_yscale("log")
        axes.set_ylabel("latency (s)")
        axes.set_title(f"{run['policy']}: baseline | {spec['overload_rps']:.2f}/s overload | recovery", fontsize=9)
        axes.grid(True, which="both", alpha=0.3)
    all_axes[-1, 0].set_xlabel("scheduled send time (s)")
    all_axes[0, 0].legend(fontsize=7, loc="upper left", markerscale=2)
    return _save(figure, path)


def plot_all(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Every plot the results support; returns name → file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [run for run in results["runs"] if run["steps"] or run.get("overload")]
    made: dict[str, Path] = {}
    swept = [run for run in runs if run["steps"]]
    if swept:
        made["latency_throughput"] = plot_latency_throughput(swept, out_dir / "latency_throughput.png")
        made["width_mix"] = plot_width_mix(swept, out_dir / "width_mix.png")
        made["goodput"] = plot_goodput(swept, out_dir / "goodput.png")
    if any(run.get("overload") for run in runs):
        made["overload_timeline"] = plot_overload_timeline(runs, out_dir / "overload_timeline.png")
    return made
