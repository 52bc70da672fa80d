"""Monitoring files stay valid and in step with the server: Prometheus rules, alerts, Grafana dashboard.

Every metric the dashboard, the recording and alerting rules, the HPA and prometheus-adapter read must
be one a running server exports: the test scrapes a real app (tiny model, full lifespan, one upscale)
and fails on any name it does not find, so renaming a metric breaks CI here rather than a dashboard in
production. promtool (Debian's ``prometheus`` package; CI installs it) validates the config and rules
and runs the alert unit tests; those tests skip where promtool is absent. CI's container test then
runs every query against a real Prometheus scraping the real image (deploy/ci/container_checks.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from deploy.ci.container_checks import alert_signal, every_query
from deploy.grafana import dashboard as grafana
from tests.server.helpers import TestClient, encode, fast_settings, make_app, random_image

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
#: Series Prometheus makes itself rather than scraping.
SYNTHETIC = {"up"}
#: A metric or recording-rule name in PromQL: anysr_*, process_*, or level:metric:operations.
_NAME = re.compile(r"\b(?:anysr_\w+|process_\w+|up|\w+:anysr_\w+:\w+)\b(?!\s*\()")


@cache
def exported_samples() -> frozenset[str]:
    """Sample names a running server exposes on /metrics after serving one upscale."""
    with TestClient(make_app(fast_settings())) as client:
        answer = client.post(
            "/upscale?scale=2", content=encode(random_image(24, 20)), headers={"content-type": "image/png"}
        )
        assert answer.status_code == 200, answer.text
        text = client.get("/metrics").text
    return frozenset(re.findall(r"^([a-zA-Z_:][\w:]*)(?:\{| )", text, flags=re.MULTILINE))


def rules() -> list[dict]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def names_in(expr: str) -> set[str]:
    # Strip label matchers first: label values (job="anysr") are not metric names.
    return set(_NAME.findall(re.sub(r"\{[^}]*\}", "", expr)))


def used_metrics() -> dict[str, set[str]]:
    """Metric names by where they are used (dashboard panels, rules, HPA, adapter)."""
    used: dict[str, set[str]] = {}
    for where, expr in every_query(ROOT):
        for name in names_in(expr):
            used.setdefault(name, set()).add(where)
    k8s = ROOT / "deploy" / "k8s"
    hpa = yaml.safe_load((k8s / "hpa.yaml").read_text())
    for metric in hpa["spec"]["metrics"]:
        used.setdefault(metric["pods"]["metric"]["name"], set()).add("HPA")
    adapter = yaml.safe_load((k8s / "optional" / "prometheus-adapter-values.yaml").read_text())
    for rule in adapter["rules"]["custom"]:
        used.setdefault(rule["seriesQuery"].split("{")[0], set()).add("prometheus-adapter")
    return used


# -- metric names ----------------------------------------------------------------------------------------


def test_every_metric_the_dashboard_rules_and_hpa_read_is_exported_by_a_running_server():
    exported = exported_samples()
    used = used_metrics()
    assert {"anysr_queue_work_seconds", "process_resident_memory_bytes"} <= set(used)
    missing = {
        name: sorted(where)
        for name, where in used.items()
        if name not in exported and name not in recorded() and name not in SYNTHETIC
    }
    assert not missing, f"used but not exported (renamed?): {missing}"


def test_the_check_catches_a_renamed_metric():
    """The test above would fail if the server renamed a metric the dashboard reads."""
    renamed = exported_samples() - {"anysr_queue_work_seconds"}
    assert "anysr_queue_work_seconds" in used_metrics() and "anysr_queue_work_seconds" not in renamed


def test_recording_rules_read_exported_metrics_and_are_all_used():
    exported = exported_samples()
    for rule in rules():
        for name in names_in(rule["expr"]) - SYNTHETIC - recorded():
            assert name in exported, f"{rule.get('record') or rule['alert']} reads {name}, which is not exported"
    read_by_others = set()
    for where, expr in every_query(ROOT):
        if not where.startswith("recording rule"):
            read_by_others |= names_in(expr)
    assert recorded() <= read_by_others, f"recording rules nothing reads: {recorded() - read_by_others}"


# -- rules and alerts ---------------------------------------------------------------------------------------


def test_alerts_cover_latency_queue_errors_and_down_and_have_a_checkable_shape():
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert {"AnySRDown", "AnySRHighP99Latency", "AnySRQueuedWorkHigh", "AnySRErrorRateHigh"} <= set(alerts)
    assert "width" in alert_signal(alerts["AnySRHighP99Latency"]["expr"]), "p99 alert must be per width"
    for name, rule in alerts.items():
        alert_signal(rule["expr"])  # raises unless `signal OP number`
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name


def test_prometheus_config_loads_every_rule_file_and_compose_mounts_it():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    loaded = {path for pattern in config["rule_files"] for path in PROMETHEUS.glob(pattern)}
    assert loaded == set(RULE_FILES) and RULE_FILES
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    data = [volume for volume in prometheus["volumes"] if volume.endswith(":/prometheus")]
    assert len(data) == 1 and data[0].split(":")[0] in compose["volumes"], "Prometheus data needs a named volume"


promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool absent (apt-get install prometheus)")


def run_promtool(*args: str) -> str:
    result = subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@promtool
def test_promtool_accepts_the_config_and_rules():
    run_promtool("check", "config", "deploy/prometheus/prometheus.yml")
    run_promtool("check", "rules", *[str(path.relative_to(ROOT)) for path in RULE_FILES])


@promtool
def test_every_alert_fires_on_its_synthetic_series():
    """deploy/prometheus/tests/alerts_test.yml: each alert fires when it should, with its annotations."""
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "tests" / "alerts_test.yml").read_text()))
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}
    assert "SUCCESS" in run_promtool("test", "rules", "deploy/prometheus/tests/alerts_test.yml")


# -- Grafana -------------------------------------------------------------------------------------------------


def test_dashboard_json_is_the_generator_output():
    assert (GRAFANA / "dashboards" / "anysr-serve.json").read_text() == grafana.render(), (
        "run `python -m deploy.grafana.dashboard`"
    )


def test_dashboard_panels_cover_the_issue_and_lay_out_without_overlap():
    model = json.loads(grafana.render())
    panels = model["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panel {panel['id']} overlaps another"
                cells.add((x, y))
        assert panel["targets"] and all(target["expr"] for target in panel["targets"])
    exprs = " ".join(target["expr"] for panel in panels for target in panel["targets"])
    for needed in (
        "anysr_request_duration_seconds:p99_5m",  # latency percentiles by width
        "anysr_flops_total",  # FLOPs/s
        "anysr_width_selected_total",  # width mix
        "anysr_queue_work_seconds",  # queued work
        "anysr_batch_size_tiles",  # batch size
        "anysr_gpu_utilisation_ratio",  # GPU load
        "anysr_cpu_utilisation_ratio",  # CPU load
        'status=~"5.."',  # error rate
    ):
        assert needed in exprs, needed


def test_dashboard_datasource_and_provisioning_match_compose():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["uid"] == grafana.DATASOURCE_UID and source["type"] == "prometheus"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert source["url"] == "http://prometheus:9090" and "9090:9090" in compose["services"]["prometheus"]["ports"]
    model = json.loads(grafana.render())
    for panel in model["panels"]:
        assert panel["datasource"]["uid"] == grafana.DATASOURCE_UID
        assert all(target["datasource"]["uid"] == grafana.DATASOURCE_UID for target in panel["targets"])
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "anysr.yml").read_text())["providers"][0]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{grafana.OUTPUT.name}"
