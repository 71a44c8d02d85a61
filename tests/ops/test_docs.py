"""The README's "Run the full stack" and "Alerts" sections and docs/runbooks.md stay in step with the rules."""

from __future__ import annotations

import re

from tests.ops.deploy_files import README, RUNBOOKS, alert_rules, dashboards


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_sections_come_just_before_the_benchmark() -> None:
    headings = re.findall(r"^## (.+)$", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    at = headings.index("Benchmark")
    assert headings[at - 2:at] == ["Run the full stack", "Alerts"]


def test_full_stack_section_names_the_command_the_urls_and_the_dashboards() -> None:
    section = _section("Run the full stack")
    for needed in ("docker compose up", "http://localhost:9090", "http://localhost:9093", "http://localhost:3000",
                   "leadgen-targets.yml", "deploy/grafana/dashboards.py"):
        assert needed in section, needed
    for dashboard in dashboards().values():
        assert f"**{dashboard['title']}**" in section, dashboard["title"]


def test_alerts_section_lists_every_alert_with_its_runbook_and_severity() -> None:
    section = _section("Alerts")
    rows = {match[0]: match for match in re.findall(
        r"^\| \[`(\w+)`\]\(docs/runbooks\.md#(\w+)\) \| (\w+) \|", section, flags=re.MULTILINE)}
    assert set(rows) == {rule.name for rule in alert_rules()}
    for rule in alert_rules():
        _, anchor, severity = rows[rule.name]
        assert anchor == rule.name.lower() and severity == rule.spec["labels"]["severity"], rule.name


def test_runbooks_say_what_fired_and_how_to_fix_it() -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    for section in sections:
        name = section.split("\n", 1)[0].strip()
        for part in ("**What fired.**", "**Look first.**", "**Fix.**", "**Resolves**"):
            assert part in section, f"runbook {name}: no {part}"
