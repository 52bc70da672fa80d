"""Workload specs: what each request of a load test looks like, read from a YAML or JSON file.

A spec fixes the image set and size mix, the scale mix, the share of requests that carry an
``X-AnySR-Budget`` or ``X-AnySR-Deadline-Ms`` header (and their values), the output format and the
arrival process. With its seed it determines every request exactly (see ``loadtest/plan.py``), so
two runs of a spec send the same requests. Example (all keys; see loadtest/workloads/)::

    name: mixed-small
    seed: 0
    arrival: poisson            # or constant
    images:
      source: synthetic         # or folder (then give `folder`)
      folder: null              # relative paths are resolved against the spec file
      variants: 4               # distinct images per size
      sizes:                    # size mix: [height, width] and a relative weight
        - {size: [64, 64], weight: 3}
        - {size: [96, 128], weight: 1}
    scales:
      uniform: [1.1, 4.0]       # or choices: [{scale: 2, weight: 1}, {scale: 3.5, weight: 1}]
    budget:   {share: 0.1, values: ["width=0.7", "gflops=2"]}
    deadline: {share: 0.1, ms: [1000, 5000]}
    output:   {format: png, quality: null}

Validation errors name the key, the value and what is allowed. Nothing here touches the network.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtest.arrivals import ARRIVAL_PROCESSES

OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
IMAGE_SOURCES: tuple[str, ...] = ("synthetic", "folder")
#: Scales the spec may ask for; the server's own range (default (1, 8]) is narrower and answers 422 beyond it.
MIN_SCALE_EXCLUSIVE, MAX_SCALE = 1.0, 64.0
BUDGET_KEYS: tuple[str, ...] = ("width", "gflops")


class WorkloadError(ValueError):
    """A workload spec is malformed or out of range."""


@dataclass(frozen=True)
class SizeChoice:
    """One input size (LR height, width in pixels) and its relative weight in the mix."""

    height: int
    width: int
    weight: float = 1.0


@dataclass(frozen=True)
class ImageSet:
    """Where input images come from. Folder images are centre-cropped to each size when sizes are given."""

    source: str = "synthetic"
    sizes: tuple[SizeChoice, ...] = (SizeChoice(64, 64),)
    folder: Path | None = None
    variants: int = 4


@dataclass(frozen=True)
class ScaleMix:
    """Either uniform over ``[low, high]`` or a weighted list of scales."""

    low: float | None = 1.1
    high: float | None = 4.0
    choices: tuple[tuple[float, float], ...] = ()

    @property
    def is_uniform(self) -> bool:
        return not self.choices


@dataclass(frozen=True)
class HeaderMix:
    """A header sent with a share of requests; its value is drawn uniformly from ``values``."""

    share: float = 0.0
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputOptions:
    format: str = "png"
    quality: int | None = None


@dataclass(frozen=True)
class Workload:
    name: str = "default"
    seed: int = 0
    arrival: str = "poisson"
    images: ImageSet = field(default_factory=ImageSet)
    scales: ScaleMix = field(default_factory=ScaleMix)
    budget: HeaderMix = field(default_factory=HeaderMix)
    deadline: HeaderMix = field(default_factory=HeaderMix)
    output: OutputOptions = field(default_factory=OutputOptions)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (for results files and reports)."""
        sizes = [{"size": [s.height, s.width], "weight": s.weight} for s in self.images.sizes]
        scales: dict[str, Any]
        if self.scales.is_uniform:
            scales = {"uniform": [self.scales.low, self.scales.high]}
        else:
            scales = {"choices": [{"scale": s, "weight": w} for s, w in self.scales.choices]}
        return {
            "name": self.name,
            "seed": self.seed,
            "arrival": self.arrival,
            "images": {
                "source": self.images.source,
                "folder": str(self.images.folder) if self.images.folder else None,
                "variants": self.images.variants,
                "sizes": sizes,
            },
            "scales": scales,
            "budget": {"share": self.budget.share, "values": list(self.budget.values)},
            "deadline": {"share": self.deadline.share, "ms": [float(v) for v in self.deadline.values]},
            "output": {"format": self.output.format, "quality": self.output.quality},
        }


def _mapping(value: Any, where: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WorkloadError(f"{where} must be a mapping with keys {allowed}, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise WorkloadError(f"{where} has unknown keys {unknown}; allowed: {allowed}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WorkloadError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(f"{where} must be a positive integer, got {value!r}")
    return value


def _share(value: Any, where: str) -> float:
    share = _number(value, where)
    if not 0.0 <= share <= 1.0:
        raise WorkloadError(f"{where} must be between 0 and 1, got {share}")
    return share


def _scale(value: Any, where: str) -> float:
    scale = _number(value, where)
    if not MIN_SCALE_EXCLUSIVE < scale <= MAX_SCALE:
        raise WorkloadError(f"{where} must be greater than {MIN_SCALE_EXCLUSIVE} and at most {MAX_SCALE}, got {scale}")
    return scale


def _weight(value: Any, where: str) -> float:
    weight = _number(value, where)
    if weight <= 0:
        raise WorkloadError(f"{where} must be positive, got {weight}")
    return weight


def parse_sizes(value: Any) -> tuple[SizeChoice, ...]:
    if not isinstance(value, list) or not value:
        raise WorkloadError(f"images.sizes must be a non-empty list of {{size: [h, w], weight: n}}, got {value!r}")
    sizes = []
    for index, item in enumerate(value):
        where = f"images.sizes[{index}]"
        item = _mapping(item, where, ("size", "weight"))
        size = item.get("size")
        if not isinstance(size, list | tuple) or len(size) != 2:
            raise WorkloadError(f"{where}.size must be [height, width], got {size!r}")
        height, width = (_positive_int(side, f"{where}.size") for side in size)
        sizes.append(SizeChoice(height, width, _weight(item.get("weight", 1.0), f"{where}.weight")))
    return tuple(sizes)


def parse_images(value: Any, base_dir: Path) -> ImageSet:
    data = _mapping(value, "images", ("source", "folder", "variants", "sizes"))
    source = data.get("source", "synthetic")
    if source not in IMAGE_SOURCES:
        raise WorkloadError(f"images.source must be one of {IMAGE_SOURCES}, got {source!r}")
    folder = None
    if source == "folder":
        if not data.get("folder"):
            raise WorkloadError("images.source is 'folder' but images.folder is not given")
        folder = Path(str(data["folder"])).expanduser()
        folder = folder if folder.is_absolute() else (base_dir / folder)
    sizes = parse_sizes(data["sizes"]) if "sizes" in data else (() if source == "folder" else ImageSet().sizes)
    variants = _positive_int(data.get("variants", 4), "images.variants")
    return ImageSet(source=source, sizes=sizes, folder=folder, variants=variants)


def parse_scales(value: Any) -> ScaleMix:
    data = _mapping(value, "scales", ("uniform", "choices"))
    if ("uniform" in data) == ("choices" in data):
        raise WorkloadError("scales needs exactly one of 'uniform: [low, high]' or 'choices: [{scale, weight}]'")
    if "uniform" in data:
        bounds = data["uniform"]
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise WorkloadError(f"scales.uniform must be [low, high], got {bounds!r}")
        low, high = _scale(bounds[0], "scales.uniform[0]"), _scale(bounds[1], "scales.uniform[1]")
        if low > high:
            raise WorkloadError(f"scales.uniform low ({low}) must not exceed high ({high})")
        return ScaleMix(low=low, high=high)
    items = data["choices"]
    if not isinstance(items, list) or not items:
        raise WorkloadError(f"scales.choices must be a non-empty list, got {items!r}")
    choices = []
    for index, item in enumerate(items):
        where = f"scales.choices[{index}]"
        if isinstance(item, int | float) and not isinstance(item, bool):
            choices.append((_scale(item, where), 1.0))
            continue
        item = _mapping(item, where, ("scale", "weight"))
        choices.append(
            (_scale(item.get("scale"), f"{where}.scale"), _weight(item.get("weight", 1.0), f"{where}.weight"))
        )
    return ScaleMix(low=None, high=None, choices=tuple(choices))


def check_budget_value(value: str) -> str:
    """Check an ``X-AnySR-Budget`` value's shape (``width=W`` and/or ``gflops=G``); the server checks the rest."""
    seen = set()
    for part in value.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in BUDGET_KEYS or key in seen:
            raise WorkloadError(f"budget value must be 'width=W' and/or 'gflops=G' (each once), got {value!r}")
        seen.add(key)
        try:
            number = float(raw)
        except ValueError:
            raise WorkloadError(f"budget value {value!r}: {key} must be a number, got {raw.strip()!r}") from None
        upper = 1.0 if key == "width" else math.inf
        if not (0 < number <= upper):
            raise WorkloadError(f"budget value {value!r}: {key} must be in (0, {upper}], got {number}")
    return value.strip()


def parse_budget(value: Any) -> HeaderMix:
    data = _mapping(value, "budget", ("share", "values"))
    share = _share(data.get("share", 0.0), "budget.share")
    raw = data.get("values", [])
    if not isinstance(raw, list):
        raise WorkloadError(f"budget.values must be a list of strings, got {raw!r}")
    values = tuple(check_budget_value(str(item)) for item in raw)
    if share > 0 and not values:
        raise WorkloadError(f"budget.share is {share} but budget.values is empty")
    return HeaderMix(share=share, values=values)


def parse_deadline(value: Any) -> HeaderMix:
    data = _mapping(value, "deadline", ("share", "ms"))
    share = _share(data.get("share", 0.0), "deadline.share")
    raw = data.get("ms", [])
    if not isinstance(raw, list):
        raise WorkloadError(f"deadline.ms must be a list of milliseconds, got {raw!r}")
    values = []
    for index, item in enumerate(raw):
        millis = _number(item, f"deadline.ms[{index}]")
        if millis <= 0:
            raise WorkloadError(f"deadline.ms[{index}] must be positive, got {millis}")
        values.append(f"{millis:g}")
    if share > 0 and not values:
        raise WorkloadError(f"deadline.share is {share} but deadline.ms is empty")
    return HeaderMix(share=share, values=tuple(values))


def parse_output(value: Any) -> OutputOptions:
    data = _mapping(value, "output", ("format", "quality"))
    fmt = str(data.get("format", "png")).lower()
    if fmt not in OUTPUT_FORMATS:
        raise WorkloadError(f"output.format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    quality = data.get("quality")
    if quality is not None:
        quality = _positive_int(quality, "output.quality")
        if quality > 100:
            raise WorkloadError(f"output.quality must be between 1 and 100, got {quality}")
    return OutputOptions(format=fmt, quality=quality)


def parse_workload(data: Any, base_dir: Path = Path(".")) -> Workload:
    """Build a :class:`Workload` from a parsed YAML/JSON mapping; relative folders resolve against ``base_dir``."""
    top = _mapping(data, "workload", ("name", "seed", "arrival", "images", "scales", "budget", "deadline", "output"))
    seed = top.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise WorkloadError(f"seed must be a non-negative integer, got {seed!r}")
    arrival = top.get("arrival", "poisson")
    if arrival not in ARRIVAL_PROCESSES:
        raise WorkloadError(f"arrival must be one of {ARRIVAL_PROCESSES}, got {arrival!r}")
    return Workload(
        name=str(top.get("name", "default")),
        seed=seed,
        arrival=arrival,
        images=parse_images(top.get("images"), base_dir),
        scales=parse_scales(top["scales"]) if "scales" in top else ScaleMix(),
        budget=parse_budget(top.get("budget")),
        deadline=parse_deadline(top.get("deadline")),
        output=parse_output(top.get("output")),
    )


def load_workload(path: Path) -> Workload:
    """Read a ``.yaml``/``.yml``/``.json`` spec file."""
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise WorkloadError(f"cannot parse workload file {path}: {error}") from None
    try:
        return parse_workload(data, path.parent)
    except WorkloadError as error:
        raise WorkloadError(f"{path}: {error}") from None
