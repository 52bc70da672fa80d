"""The quality side of the trade: PSNR cost of a width at a scale, read from an ``anysr eval`` JSON file.

The cost of serving a request at width *w* and scale *s* is ``PSNR(1.0, s) - PSNR(w, s)`` in dB (0 at
full width), averaged over the evaluated datasets (or one dataset if named). Between evaluated
scales the cost is interpolated linearly; outside them it takes the nearest evaluated scale's value.

The reader is tolerant of the file's layout, since the eval tool owns it. It collects every JSON
object anywhere in the file that has a ``width``, a ``scale`` and a PSNR (``psnr``, ``psnr_db``,
``psnr_y`` or ``psnr_y_db``), plus an optional ``dataset``. ``scale`` may be a number, a string such
as ``"x2.5"``, or an ``[s_h, s_w]`` pair (square pairs only). Objects with an ``image`` key are
per-image scores and are used only when the file has no aggregate rows (``anysr eval``'s
``eval.json`` has both: ``summary`` and ``per_image``). Rows without a width (bicubic) are ignored,
and duplicates of one (dataset, width, scale), such as eval's ``auto`` row beside the fixed width it
reuses, are averaged before the datasets are. Run ``anysr eval --widths all`` so every width has rows.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PSNR_KEYS: tuple[str, ...] = ("psnr", "psnr_db", "psnr_y", "psnr_y_db")
FULL_WIDTH = 1.0


class QualityTableError(ValueError):
    """The eval file has no usable (width, scale, PSNR) records."""


@dataclass(frozen=True)
class PsnrRecord:
    dataset: str
    width: float
    scale: float
    psnr_db: float
    per_image: bool = False


def _scale(value: Any) -> float | None:
    """A square scale from a number, ``"x2"``/``"2"`` or an ``[s_h, s_w]`` pair (None if non-square)."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            return None
        s_h, s_w = _number(value[0]), _number(value[1])
        return s_h if s_h is not None and s_h == s_w else None
    return _number(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip().lower().lstrip("x×"))
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def iter_records(data: Any, dataset: str = "") -> Iterator[PsnrRecord]:
    """Every (width, scale, PSNR) object in a parsed JSON tree; a ``dataset`` key is inherited by children."""
    if isinstance(data, dict):
        dataset = str(data.get("dataset", dataset))
        width, scale = _number(data.get("width")), _scale(data.get("scale"))
        psnr = next((_number(data[key]) for key in PSNR_KEYS if key in data), None)
        if width is not None and scale is not None and psnr is not None:
            yield PsnrRecord(dataset, width, scale, psnr, per_image="image" in data)
        for value in data.values():
            if isinstance(value, dict | list):
                yield from iter_records(value, dataset)
    elif isinstance(data, list):
        for item in data:
            yield from iter_records(item, dataset)


class PsnrTable:
    """Mean PSNR per (width, scale) and the cost of each width against full width."""

    def __init__(self, records: list[PsnrRecord], source: str = "") -> None:
        per_dataset: dict[tuple[float, float, str], list[float]] = defaultdict(list)
        for record in records:
            per_dataset[(round(record.width, 3), round(record.scale, 4), record.dataset)].append(record.psnr_db)
        grouped: dict[tuple[float, float], list[float]] = defaultdict(list)
        for (width, scale, _), values in per_dataset.items():
            grouped[(width, scale)].append(float(np.mean(values)))
        self.psnr = {key: float(np.mean(values)) for key, values in grouped.items()}
        self.source = source
        self.datasets = sorted({record.dataset for record in records if record.dataset})
        self._costs: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        full = {scale: psnr for (width, scale), psnr in self.psnr.items() if width == FULL_WIDTH}
        for width in sorted({width for width, _ in self.psnr}):
            scales = sorted(scale for (w, scale) in self.psnr if w == width and scale in full)
            if scales:
                costs = [full[scale] - self.psnr[(width, scale)] for scale in scales]
                self._costs[width] = (np.array(scales), np.array(costs))
        if FULL_WIDTH not in self._costs:
            raise QualityTableError(f"{source or 'eval table'} has no full-width (1.0) PSNR to compare against")

    @property
    def widths(self) -> list[float]:
        return sorted(self._costs)

    def cost_db(self, width: float, scale: float) -> float | None:
        """dB lost by ``width`` against full width at ``scale`` (None for a width the table lacks)."""
        entry = self._costs.get(round(width, 3))
        if entry is None:
            return None
        scales, costs = entry
        return float(np.interp(scale, scales, costs))

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "datasets": self.datasets,
            "cost_db": {
                f"{width:.1f}": {f"{s:g}": float(c) for s, c in zip(*self._costs[width])} for width in self.widths
            },
        }


def load_psnr_table(path: Path, dataset: str | None = None) -> PsnrTable:
    """Read an eval JSON file; keep only ``dataset`` if given."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise QualityTableError(f"cannot read eval file {path}: {error}") from None
    found = list(iter_records(data))
    records = [record for record in found if not record.per_image] or found
    if dataset is not None:
        records = [record for record in records if record.dataset == dataset]
    if not records:
        wanted = f" for dataset {dataset!r}" if dataset else ""
        raise QualityTableError(
            f"{path} has no records{wanted} with 'width', 'scale' and one of {PSNR_KEYS}; "
            'expected e.g. [{"dataset": "Set5", "scale": 2, "width": 0.5, "psnr": 37.1}, ...]'
        )
    return PsnrTable(records, source=str(path))
