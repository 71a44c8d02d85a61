"""Targets: the file a marketing team edits, checked with clear errors, and attainment and pacing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from stream.core.calendar import MONTH, QUARTER
from stream.core.cells import FUNNEL, TRAFFIC, CellId
from stream.core.targets import Target, TargetsError, attainment, elapsed_share, load_targets, pacing

FUNNEL_STAGES = ("lead", "mql", "sal", "sql", "opportunity", "won")
HOUR, DAY = 3_600_000, 86_400_000
SIZES = (HOUR, DAY, MONTH, QUARTER)

EXAMPLE = """
# The playbook's examples: marketing-sourced pipeline per quarter, leads per month from paid search, a cost per
# lead ceiling for paid social.
[[targets]]
kpi = "pipeline"
period = "1q"
at_least = 100000

[[targets]]
kpi = "lead_volume"
period = "1mo"
channel = "paid_search"
at_least = 150

[[targets]]
kpi = "cost_per_lead"
period = "1mo"
channel = "paid_social"
at_most = "40.50"

[[targets]]
kpi = "conversion_rate"
period = "1mo"
from_stage = "mql"
to_stage = "sal"
at_least = 0.3
"""


def _load(tmp_path: Path, text: str) -> tuple[Target, ...]:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return load_targets(str(path), SIZES, FUNNEL_STAGES)


def test_the_example_file_reads_as_four_targets(tmp_path: Path) -> None:
    pipeline, leads, cost, conversion = _load(tmp_path, EXAMPLE)
    assert pipeline == Target("pipeline", QUARTER, (), Decimal(100000), "at_least")
    assert leads == Target("lead_volume", MONTH, (("channel", "paid_search"),), Decimal(150), "at_least")
    assert cost == Target("cost_per_lead", MONTH, (("channel", "paid_social"),), Decimal("40.50"), "at_most")
    assert conversion.dimensions == (("from_stage", "mql"), ("to_stage", "sal"))
    assert (pipeline.cumulative, leads.cumulative, cost.cumulative, conversion.cumulative) == (True, True, False,
                                                                                               False)
    assert leads.cell(123) == CellId(FUNNEL, MONTH, 123, "paid_search", None)
    assert Target("visitors", MONTH, (("channel", "email"),), Decimal(1), "at_least").cell(5) == CellId(
        TRAFFIC, MONTH, 5, "email", None)
    assert leads.target_dimensions() == {"target_kpi": "lead_volume", "bound": "at_least", "channel": "paid_search"}


def test_no_file_no_targets() -> None:
    assert load_targets("", SIZES, FUNNEL_STAGES) == ()


@pytest.mark.parametrize(("text", "message"), [
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nat_least = 1\n[[targets]]\nkpi = "lead_volumes"\n'
     'period = "1mo"\nat_least = 1\n', "target 2: kpi 'lead_volumes' cannot have a target: did you mean lead_volume?"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1w"\nat_least = 1\n',
     "target 1: period '1w' is not one of KPI_WINDOW_SIZES (1h, 1d, 1mo, 1q): add it there"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "2mo"\nat_least = 1\n', "target 1: period: '2mo' is not a window"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\n', "target 1: give the target as exactly one of at_least"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nat_least = 1\nat_most = 2\n', "exactly one of at_least"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nat_least = -3\n', "at_least must be a number above 0"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nat_least = "lots"\n', "at_least must be a number above 0"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nat_least = true\n', "at_least must be a number above 0"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\ncampaign = "q4"\nat_least = 1\n',
     "a campaign's target names its channel too"),
    ('[[targets]]\nkpi = "page_views"\nperiod = "1mo"\nchannel = "email"\ncampaign = "q4"\nat_least = 1\n',
     "page_views is kept per channel, not per campaign"),
    ('[[targets]]\nkpi = "conversion_rate"\nperiod = "1mo"\nat_least = 0.2\n', "names its step, one of lead->mql"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nfrom_stage = "mql"\nat_least = 1\n',
     "only a conversion_rate target names from_stage"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nchanel = "email"\nat_least = 1\n', "unknown key 'chanel'"),
    ('[[targets]]\nkpi = "lead_volume"\nperiod = "1mo"\nat_least = 1\n[[targets]]\nkpi = "lead_volume"\n'
     'period = "1mo"\nat_least = 2\n', "target 2: a second target for lead_volume per 1mo with the same dimensions"),
    ('[target]\nkpi = "x"\n', "unknown key 'target': list each target as a [[targets]] table"),
    ("[[targets]\n", "not TOML"),
])
def test_a_wrong_file_is_refused_naming_the_target_and_the_rule(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TargetsError, match="^KPI_TARGETS_FILE ") as refused:
        _load(tmp_path, text)
    assert message in str(refused.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TargetsError, match=r"KPI_TARGETS_FILE \S+nowhere.toml: cannot be read: No such file"):
        load_targets(str(tmp_path / "nowhere.toml"), SIZES, FUNNEL_STAGES)


LEADS = Target("lead_volume", MONTH, (), Decimal(150), "at_least")
CPL = Target("cost_per_lead", MONTH, (), Decimal(40), "at_most")


@pytest.mark.parametrize(("actual", "elapsed", "target", "attained", "paced"), [
    (75, 0.5, LEADS, 0.5, 1.0),  # half the month, half the leads: on pace
    (30, 0.5, LEADS, 0.2, 0.4),  # behind
    (150, 1.0, LEADS, 1.0, 1.0),
    (0, 0.0, LEADS, 0.0, None),  # nothing elapsed yet: no pace to speak of
    (50.0, 0.5, CPL, 1.25, 1.25),  # $50 a lead against at most $40: a ratio is its own pace
    (None, 0.5, CPL, None, None),  # no lead yet: no cost per lead
])
def test_attainment_and_pacing(actual: float | None, elapsed: float, target: Target, attained: float | None,
                               paced: float | None) -> None:
    assert attainment(actual, target) == attained
    assert pacing(attained, elapsed, target) == paced


@pytest.mark.parametrize(("watermark", "share"), [
    (None, 0.0), (0, 0.0), (1000, 0.0), (1500, 0.5), (1999, 0.999), (2000, 1.0), (9000, 1.0),
    (1000 + 1000 // 3, 0.333),  # in thousandths, rounded down
])
def test_the_elapsed_share_of_a_window_follows_the_watermark(watermark: int | None, share: float) -> None:
    assert elapsed_share(1000, 2000, watermark) == share
