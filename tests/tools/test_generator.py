"""The synthetic traffic model: its lead rate, the knob behind the bench's ``--lead-rate``."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from stream.core.events import Kind
from stream.tools.generator import TrafficModel

START_MS = 1_796_000_000_000


def kinds(model: TrafficModel, events: int) -> Counter[Kind]:
    return Counter(kind for kind, _ in itertools.islice(model.events(events), events))


def test_every_visit_becoming_a_lead_gives_about_one_lead_in_five_events() -> None:
    # A visit is 1-5 page views (3 on average) and a lead; its stage changes come minutes to hours later, so
    # fewer of them are among the first events: leads are 15-30 % of the events, against 1-3 % with the
    # channels' own rates.
    events = 20_000
    default = kinds(TrafficModel(seed=3, start_ms=START_MS), events)
    every_visit = kinds(TrafficModel(seed=3, start_ms=START_MS, lead_rate=1.0), events)
    assert 0.005 < default[Kind.LEAD] / events < 0.03
    assert 0.15 < every_visit[Kind.LEAD] / events < 0.30


def test_no_visit_becoming_a_lead_gives_no_leads() -> None:
    assert kinds(TrafficModel(seed=3, start_ms=START_MS, lead_rate=0.0), 5_000)[Kind.LEAD] == 0


@pytest.mark.parametrize("rate", [-0.01, 1.01])
def test_a_lead_rate_outside_0_to_1_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        TrafficModel(seed=3, start_ms=START_MS, lead_rate=rate)


@pytest.mark.parametrize("limit", [1, 7, 300, 1001])
def test_a_limit_gives_exactly_that_many_events(limit: int) -> None:
    """`kpi-stream generate --events 300` sent 302: the limit was checked once per round of visits."""
    assert sum(1 for _ in TrafficModel(seed=2, start_ms=0).events(limit)) == limit
