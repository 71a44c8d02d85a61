"""The README stays in step with the code: settings table, metric names, the two commands."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from stream.cli import settings_table
from stream.runtime import batches, faust_internals
from stream.runtime.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_settings_table_is_current() -> None:
    assert settings_table() in README


def test_every_metric_is_documented() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry, frozenset(), 20)
    names = set()
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert not missing


def test_two_commands_are_at_the_top_and_ci_runs_the_test_one() -> None:
    top = README[: README.index("## The contract")]
    assert "./dev demo" in top and "./dev test" in top
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "./dev test" in ci


def test_every_exit_status_of_the_worker_is_documented() -> None:
    table = README[README.index("### Exit statuses"):README.index("### Upgrading")]
    documented = {int(line.split("|")[1]) for line in table.splitlines() if line.startswith("| ") and
                  line.split("|")[1].strip().isdigit()}
    exits = {value for module in (batches, faust_internals) for name, value in vars(module).items()
             if name.startswith("EXIT_")}
    # 0, 1 and 2: stopped, the cluster not prepared, a bad setting (stream.cli).
    assert documented == exits | {0, 1, 2}
