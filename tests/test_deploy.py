"""deploy/: the Grafana dashboard and the Prometheus alert rules, checked statically.
Every metric their queries name is one seedq serves (the exporter's gauges, the workers'
histograms) or one the rules file documents as another exporter's; the rules have the
shape of a Prometheus rule file. Where promtool is installed it checks the PromQL too,
and runs the rules' unit tests (deploy/prometheus/alerts.test.yml)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from seedq import keys
from seedq.gauges import HELP, QueueCollector, ThrottleGauge, exporter_registry
from seedq.store import JobStore
from worker.metrics import IN_PROCESS, observe_call, observe_wait

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS_PATH = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD_PATH = DEPLOY / "grafana" / "seedq-dashboard.json"
ALERTS_TEXT = ALERTS_PATH.read_text(encoding="utf-8")
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
# Others' metrics the rules may use; the rules file's header says whose each is.
EXTERNAL = {"up", "redis_memory_used_bytes", "redis_memory_max_bytes"}
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are no function,
    aggregation, keyword, label (inside braces or a grouping clause), or duration."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {n for n in names if n.lower() not in KEYWORDS}


def sample_names(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@functools.cache
def served() -> frozenset[str]:
    """Every sample name seedq serves: the exporter's, over a store where each gauge has
    a value, and the workers', once each has observed something."""
    client = fakeredis.FakeRedis()
    client.zadd(keys.RUNS, {"r1": 1})
    client.hset(keys.run("r1"), mapping={"name": "one", "status": "active"})
    client.hset(keys.run_budget("r1"), mapping={"cap": 5, "spent": 1})
    client.zadd(keys.run_waiting("r1"), {"j1": 1})
    client.zadd(keys.ADMISSION_RUNS, {"r1": 0})
    throttles = [ThrottleGauge("submit", 1.0, 1.0, "closed")]
    exporter = sample_names(exporter_registry(QueueCollector(JobStore(client), lambda: throttles)))
    assert exporter == set(HELP), "every gauge the exporter documents is served"
    observe_call("enqueue", 0.1, ok=True)
    observe_wait("submit", 0.1)
    workers = CollectorRegistry()
    for metric in IN_PROCESS:
        workers.register(metric)
    return frozenset(exporter | sample_names(workers))


def rules() -> Iterator[dict[str, Any]]:
    for group in yaml.safe_load(ALERTS_TEXT)["groups"]:
        yield from group["rules"]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and template variable."""
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert inner, variable["definition"]
            yield f"variable {variable['name']}", inner[1]


def test_the_name_extraction_finds_metrics_and_only_metrics() -> None:
    expr = (
        'sum by (le, endpoint) (rate(a_bucket{job="x", le=~"1|2"}[5m])) / on (run_id) '
        "max(b offset 15m) > 0.9 and histogram_quantile(0.5, c) unless absent(up) * 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "up"}


def test_alert_rules_have_the_shape_of_a_prometheus_rule_file() -> None:
    document = yaml.safe_load(ALERTS_TEXT)
    assert set(document) == {"groups"}
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"], group.get("name")
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), names
    for rule in rules():
        assert set(rule) == RULE_KEYS, rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert DURATION.match(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_the_issue_s_alerts_are_there() -> None:
    wanted = {"SeedqRunStalled", "SeedqBreakerOpen", "SeedqBudgetNearlySpent"}
    wanted |= {"SeedqRedisMemoryHigh", "SeedqExporterDown"}
    assert wanted <= {rule["alert"] for rule in rules()}


def test_alert_rules_read_only_served_or_documented_metrics() -> None:
    header = ALERTS_TEXT.split("\ngroups:")[0]
    for name in EXTERNAL:
        assert name in header, f"the rules file should say whose metric {name} is"
    for rule in rules():
        unknown = metric_names(rule["expr"]) - served() - EXTERNAL
        assert not unknown, f"{rule['alert']} reads {sorted(unknown)}, which nothing serves"


def test_dashboard_is_grafana_json_reading_only_served_metrics() -> None:
    assert DASHBOARD["title"] and DASHBOARD["uid"] and DASHBOARD["schemaVersion"] >= 30
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= served(), f"{where} reads {sorted(names - served())}"
        used |= names
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
    shown = {"seedq_backlog_jobs", "seedq_in_flight_jobs", "seedq_jobs", "seedq_spend_usd"}
    shown |= {"seedq_budget_usd", "seedq_throttle_rate_per_s", "seedq_breaker_open"}
    shown |= {"seedq_oldest_waiting_job_age_seconds", "seedq_provider_call_seconds_bucket"}
    assert shown <= used, sorted(shown - used)


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def promtool(*args: str) -> None:
    done = subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool("check", "rules", str(ALERTS_PATH))
    promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yml"))


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    records = [
        {"record": f"dashboard:query_{n}", "expr": expr.replace("$run", ".*")}
        for n, (_where, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    promtool("check", "rules", str(path))
