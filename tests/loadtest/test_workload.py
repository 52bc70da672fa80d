"""Workload specs: the shipped examples parse, bad specs fail with messages naming the key and value,
and the requests drawn from a spec are deterministic, prefix-stable and follow its mix."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loadtest.images import build_pool, folder_pool, synthetic_pool
from loadtest.plan import plan_requests
from loadtest.workload import ImageSet, SizeChoice, WorkloadError, load_workload, parse_workload

WORKLOADS = sorted((Path(__file__).resolve().parents[2] / "loadtest" / "workloads").glob("*.yaml"))


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "seed": 5,
        "images": {"source": "synthetic", "variants": 2, "sizes": [{"size": [16, 24], "weight": 3}, {"size": [8, 8]}]},
        "scales": {"uniform": [1.1, 4.0]},
        "budget": {"share": 0.3, "values": ["width=0.7", "gflops=2.5"]},
        "deadline": {"share": 0.2, "ms": [500, 2000]},
        "output": {"format": "webp", "quality": 80},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize("path", WORKLOADS, ids=[path.stem for path in WORKLOADS])
def test_shipped_workloads_parse(path: Path) -> None:
    workload = load_workload(path)
    assert workload.images.sizes and workload.describe()["name"] == path.stem


def test_there_are_example_workloads() -> None:
    assert len(WORKLOADS) >= 3


def test_full_spec_parses() -> None:
    workload = parse_workload(spec())
    assert workload.images.sizes == (SizeChoice(16, 24, 3.0), SizeChoice(8, 8, 1.0))
    assert (workload.scales.low, workload.scales.high) == (1.1, 4.0)
    assert workload.budget.values == ("width=0.7", "gflops=2.5")
    assert workload.deadline.values == ("500", "2000")
    assert workload.output.format == "webp" and workload.output.quality == 80
    assert workload.arrival == "poisson"


def test_json_spec_and_relative_folder(tmp_path: Path) -> None:
    data = spec(images={"source": "folder", "folder": "imgs"})
    path = tmp_path / "w.json"
    path.write_text(json.dumps(data))
    workload = load_workload(path)
    assert workload.images.folder == tmp_path / "imgs" and workload.images.sizes == ()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"arrival": "burst"}, "arrival must be one of"),
        (
            {"scales": {"uniform": [1.0, 2.0]}},
            r"scales.uniform\[0\] must be greater than 1.0 and at most 64.0, got 1.0",
        ),
        ({"scales": {"uniform": [3.0, 2.0]}}, r"low \(3.0\) must not exceed high \(2.0\)"),
        ({"scales": {"uniform": [2, 3], "choices": [2]}}, "exactly one of"),
        ({"scales": {"choices": [{"scale": 2, "weight": 0}]}}, r"scales.choices\[0\].weight must be positive"),
        ({"budget": {"share": 1.5, "values": ["width=1.0"]}}, "budget.share must be between 0 and 1, got 1.5"),
        ({"budget": {"share": 0.5, "values": ["speed=3"]}}, "budget value must be 'width=W'"),
        ({"budget": {"share": 0.5, "values": ["width=2"]}}, r"width must be in \(0, 1.0\], got 2.0"),
        ({"budget": {"share": 0.5, "values": []}}, "budget.values is empty"),
        ({"deadline": {"share": 0.5, "ms": [-5]}}, r"deadline.ms\[0\] must be positive, got -5.0"),
        ({"output": {"format": "gif"}}, "output.format must be one of"),
        ({"output": {"format": "png", "quality": 101}}, "output.quality must be between 1 and 100, got 101"),
        ({"images": {"source": "folder"}}, "images.folder is not given"),
        ({"images": {"sizes": [{"size": [0, 8]}]}}, r"images.sizes\[0\].size must be a positive integer, got 0"),
        ({"images": {"sizes": []}}, "images.sizes must be a non-empty list"),
    ],
)
def test_invalid_specs_name_the_problem(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        parse_workload(spec(**overrides))


def test_a_broken_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("scales: {uniform: [0.5, 2]}\n")
    with pytest.raises(WorkloadError, match="bad.yaml: scales.uniform"):
        load_workload(path)


def test_plans_are_deterministic_and_prefix_stable() -> None:
    workload = parse_workload(spec())
    pool = build_pool(workload.images, workload.seed)
    first = plan_requests(workload, pool, 300, phase_key=7)
    again = plan_requests(workload, pool, 300, phase_key=7)
    longer = plan_requests(workload, pool, 600, phase_key=7)
    other = plan_requests(workload, pool, 300, phase_key=8)
    assert first == again == longer[:300]
    assert first != other


def test_plans_follow_the_mix() -> None:
    workload = parse_workload(spec())
    pool = build_pool(workload.images, workload.seed)
    requests = plan_requests(workload, pool, 4000, phase_key=1)
    sizes = Counter((r.image.height, r.image.width) for r in requests)
    assert sizes[(16, 24)] / 4000 == pytest.approx(0.75, abs=0.03)
    assert all(1.1 <= r.scale <= 4.0 and round(r.scale, 3) == r.scale for r in requests)
    assert np.mean([r.scale for r in requests]) == pytest.approx(2.55, abs=0.05)
    budgets = Counter(r.budget for r in requests)
    assert (4000 - budgets[None]) / 4000 == pytest.approx(0.3, abs=0.03)
    assert set(budgets) == {None, "width=0.7", "gflops=2.5"}
    deadlines = [r for r in requests if r.deadline_ms is not None]
    assert len(deadlines) / 4000 == pytest.approx(0.2, abs=0.03)
    assert {r.deadline_s for r in deadlines} == {0.5, 2.0}
    headers = next(r for r in requests if r.budget and r.deadline_ms).headers("id-1")
    assert headers["X-AnySR-Budget"] and headers["X-AnySR-Deadline-Ms"] and headers["X-Request-ID"] == "id-1"


def test_weighted_scale_choices() -> None:
    workload = parse_workload(spec(scales={"choices": [{"scale": 2, "weight": 3}, 4]}))
    requests = plan_requests(workload, build_pool(workload.images, 0), 2000, phase_key=1)
    counts = Counter(r.scale for r in requests)
    assert set(counts) == {2.0, 4.0} and counts[2.0] / 2000 == pytest.approx(0.75, abs=0.03)


def test_synthetic_images_are_deterministic_pngs_of_the_right_size() -> None:
    images = ImageSet(sizes=(SizeChoice(12, 20),), variants=2)
    pool = synthetic_pool(images, seed=3)
    assert [p.body for p in pool.groups[0]] == [p.body for p in synthetic_pool(images, seed=3).groups[0]]
    assert pool.groups[0][0].body != pool.groups[0][1].body
    with Image.open(io.BytesIO(pool.groups[0][0].body)) as image:
        assert image.size == (20, 12) and image.format == "PNG"


def _write_png(path: Path, width: int, height: int) -> None:
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(path)


def test_folder_images_as_found_or_cropped(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", 40, 30)
    _write_png(tmp_path / "b.png", 10, 10)
    (tmp_path / "notes.txt").write_text("not an image")
    as_found = folder_pool(ImageSet(source="folder", sizes=(), folder=tmp_path))
    assert [(g[0].name, g[0].height, g[0].width) for g in as_found.groups] == [("a.png", 30, 40), ("b.png", 10, 10)]
    cropped = folder_pool(ImageSet(source="folder", sizes=(SizeChoice(20, 20),), folder=tmp_path, variants=4))
    assert [(p.height, p.width) for p in cropped.groups[0]] == [(20, 20)]  # b.png is too small to crop
    with pytest.raises(WorkloadError, match="at least 50x50"):
        folder_pool(ImageSet(source="folder", sizes=(SizeChoice(50, 50),), folder=tmp_path))
    with pytest.raises(WorkloadError, match="is not a directory"):
        folder_pool(ImageSet(source="folder", sizes=(), folder=tmp_path / "missing"))
