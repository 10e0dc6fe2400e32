"""The Prometheus rules and the Grafana dashboard under ``deploy/``, against the real app.

promtool (Debian's ``prometheus`` package, installed by ``scripts/_system_packages.sh``)
checks the rules and runs their unit tests; the dashboard's queries go through the same
PromQL parser; and every metric either of them names must appear in a running app's
``GET /metrics``, so a renamed metric breaks the suite, not the on-call's dashboard.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from loopwise.service.settings import Settings
from tests.cluster.engines import DEPLOY, system_binary
from tests.service.http.test_metrics import exposition_after_a_journey

RULES = DEPLOY / "prometheus" / "loopwise.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "loopwise.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "loopwise.json"

# A series name in PromQL: the exported families all start with one of these prefixes;
# recorded series (``loopwise:...``) have a colon and are checked against the rules.
_EXPORTED = re.compile(r"\b(?:loopwise|process)_[a-z0-9_]+\b")
_RECORDED = re.compile(r"\bloopwise:[a-z0-9_:]+\b")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # our own arguments
        [system_binary("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())
    ]
    queries += [
        variable["query"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return queries


def _named_metrics() -> set[str]:
    """The exported series the dashboard and the rules read."""
    named: set[str] = set()
    for query in [*_dashboard_queries(), *(rule["expr"] for rule in _rules())]:
        named |= set(_EXPORTED.findall(query))
    return named


def test_rules_pass_promtool_check() -> None:
    """promtool accepts the rule file: valid YAML, PromQL and templates."""
    result = _promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_rules_pass_their_unit_tests() -> None:
    """Every alert fires on the series that should raise it, and not on a healthy twin."""
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in _rules() if "alert" in rule}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard query parses (promtool checks them as recording rules)."""
    queries = [q for q in _dashboard_queries() if not q.startswith("label_values(")]
    assert len(queries) >= 20
    # Grafana's variables, replaced by what they expand to.
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": q.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recorded_series_used_are_defined() -> None:
    """Every ``loopwise:`` series the dashboard or an alert reads is a recording rule."""
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used = set()
    for text in [*_dashboard_queries(), *(rule["expr"] for rule in _rules())]:
        used |= set(_RECORDED.findall(text))
    assert used
    assert used <= recorded, used - recorded


async def test_every_named_metric_is_exported(settings: Settings) -> None:
    """A real app's /metrics has every series the rules and the dashboard name."""
    text = await exposition_after_a_journey(settings)
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    named = await asyncio.to_thread(_named_metrics)  # reads the files off the loop
    assert len(named) >= 30
    assert named <= exported, sorted(named - exported)
