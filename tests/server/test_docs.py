"""docs/serving.md stays in step with the code: every setting, metric and reason is documented."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server.metrics import ServerMetrics
from server.scheduler import REASONS
from server.settings import Settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()


def test_every_setting_is_in_the_table_with_its_env_var():
    for name in Settings.model_fields:
        assert f"| `{name}` | `ANYSR_{name.upper()}` |" in DOC, name


def test_every_metric_is_documented():
    for family in text_string_to_metric_families(ServerMetrics().render().decode()):
        if family.name.endswith("_created"):  # prometheus_client's creation timestamps, not our metrics
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in DOC, name


def test_every_reason_is_documented():
    for reason in REASONS:
        assert f"`{reason}`" in DOC, reason
