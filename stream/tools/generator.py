"""Synthetic lead-generation traffic with a realistic funnel, a share of duplicates and of bad events.

The model is deterministic for a seed: the same seed and start time give the
same events, which the benchmark and tests rely on. Simulated time advances by
one tick per visit; live mode paces ticks to the wall clock.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from stream.core.events import Kind

# (channel, campaigns, share of visits, lead conversion rate per visit, spend per visit in USD)
CHANNELS: tuple[tuple[str, tuple[str | None, ...], float, float, float], ...] = (
    ("organic_search", (None,), 0.34, 0.030, 0.0),
    ("paid_search", ("brand", "generic-crm"), 0.22, 0.045, 2.40),
    ("paid_social", ("q4-webinar", "ebook-launch"), 0.18, 0.035, 1.60),
    ("email", ("newsletter", "nurture"), 0.10, 0.060, 0.05),
    ("referral", (None,), 0.08, 0.040, 0.0),
    ("direct", (None,), 0.08, 0.025, 0.0),
)
ASSETS = ("/demo-request", "/pricing", "/ebook/b2b-playbook", "/webinar/q4", "/trial-signup", "/contact")
PAGES = ("/", "/product", "/pricing", "/blog/lead-scoring", "/blog/abm-guide", "/customers", "/docs")
# Probability of moving on to the next stage, and mean delay before it (simulated seconds).
PROGRESSION = (("mql", 0.45, 600), ("sal", 0.70, 900), ("sql", 0.60, 1200), ("opportunity", 0.55, 1800),
               ("won", 0.35, 2400))
BAD_PAYLOADS: tuple[bytes, ...] = (
    b"{not json",
    b"[1, 2, 3]",
    b'{"event_id": "x", "ts": "2026-11-22T08:00:00"}',
    b"\xff\xfe\x00garbage",
    b'{"ts": "2026-11-22T08:00:00Z", "lead_id": "L", "channel": "email"}',
)


@dataclass(order=True)
class _Scheduled:
    due_ms: int
    order: int
    kind: Kind = field(compare=False)
    doc: dict[str, object] = field(compare=False)


@dataclass
class TrafficModel:
    """Visits, leads, stage progressions and spend, as raw input messages."""

    seed: int
    start_ms: int
    visits_per_second: float = 20.0
    duplicate_share: float = 0.02
    bad_share: float = 0.01
    time_scale: float = 1.0  # >1 compresses funnel delays (the live demo uses 20: minutes become seconds)
    clock_ms: Callable[[], int] | None = None  # live mode: event time is this clock, not simulated ticks
    lead_rate: float | None = None  # share of visits that become a lead; None: each channel's own rate (2.5-6 %)

    def __post_init__(self) -> None:
        if self.lead_rate is not None and not 0 <= self.lead_rate <= 1:
            raise ValueError(f"lead_rate is a share of visits, between 0 and 1, not {self.lead_rate}")
        self._random = random.Random(self.seed)  # noqa: S311 - synthetic data, not security
        self._ids = itertools.count()
        self._schedule: list[_Scheduled] = []
        self._tick = itertools.count()
        self.now_ms = self.start_ms
        self._spend_due: dict[tuple[str, str | None], float] = {}

    def _event_id(self, prefix: str) -> str:
        return f"{prefix}-{self.seed}-{next(self._ids)}"

    def _schedule_at(self, due_ms: int, kind: Kind, doc: dict[str, object]) -> None:
        heapq.heappush(self._schedule, _Scheduled(due_ms, next(self._tick), kind, doc))

    def _visit(self) -> list[tuple[Kind, dict[str, object]]]:
        rand = self._random
        channel, campaigns, _, conversion, spend = rand.choices(CHANNELS, weights=[c[2] for c in CHANNELS])[0]
        campaign = rand.choice(campaigns)
        visitor = f"v-{self.seed}-{rand.randrange(10**9)}"
        out: list[tuple[Kind, dict[str, object]]] = []
        for _ in range(rand.randint(1, 5)):
            doc: dict[str, object] = {"event_id": self._event_id("pv"), "ts": self.now_ms, "visitor_id": visitor,
                                      "url": rand.choice(PAGES), "channel": channel}
            if campaign:
                doc["campaign"] = campaign
            out.append((Kind.PAGE_VIEW, doc))
        if spend:
            key = (channel, campaign)
            self._spend_due[key] = self._spend_due.get(key, 0.0) + spend * rand.uniform(0.7, 1.3)
        if rand.random() < (conversion if self.lead_rate is None else self.lead_rate):
            out.append(self._lead(channel, campaign, visitor))
        return out

    def _lead(self, channel: str, campaign: str | None, visitor: str) -> tuple[Kind, dict[str, object]]:
        rand = self._random
        lead_id = f"L-{self.seed}-{next(self._ids)}"
        doc: dict[str, object] = {"event_id": self._event_id("lead"), "ts": self.now_ms, "lead_id": lead_id,
                                  "channel": channel, "visitor_id": visitor, "asset": rand.choice(ASSETS),
                                  "owner": f"rep-{rand.randint(1, 8)}"}
        if campaign:
            doc["campaign"] = campaign
        due = self.now_ms
        for stage, probability, mean_delay_s in PROGRESSION:
            if rand.random() >= probability:
                if stage in ("opportunity", "won") or rand.random() < 0.3:
                    lost_at = due + int(rand.expovariate(1 / mean_delay_s) * 1000 / self.time_scale)
                    self._schedule_at(lost_at, Kind.STAGE_CHANGE, {"lead_id": lead_id, "stage": "lost"})
                break
            due += int(rand.expovariate(1 / mean_delay_s) * 1000 / self.time_scale)
            change: dict[str, object] = {"lead_id": lead_id, "stage": stage}
            if stage in ("opportunity", "won"):
                change["amount"] = f"{rand.randint(5, 120) * 500}.00"
                change["currency"] = rand.choice(("USD", "USD", "USD", "EUR"))
            # Some steps are skipped in the CRM: the stage is implied by a later one.
            if stage in ("sal", "sql") and rand.random() < 0.15:
                continue
            self._schedule_at(due, Kind.STAGE_CHANGE, change)
        return Kind.LEAD, doc

    def _due(self) -> list[tuple[Kind, dict[str, object]]]:
        out = []
        while self._schedule and self._schedule[0].due_ms <= self.now_ms:
            item = heapq.heappop(self._schedule)
            out.append((item.kind, {"event_id": self._event_id("sc"), "ts": item.due_ms, **item.doc}))
        return out

    def _spend(self) -> list[tuple[Kind, dict[str, object]]]:
        out = []
        for (channel, campaign), amount in self._spend_due.items():
            if amount < 25:  # spend is booked in chunks, as ad platforms report it
                continue
            doc: dict[str, object] = {"event_id": self._event_id("sp"), "ts": self.now_ms, "channel": channel,
                                      "amount": f"{amount:.2f}", "currency": "USD"}
            if campaign:
                doc["campaign"] = campaign
            out.append((Kind.SPEND, doc))
            self._spend_due[(channel, campaign)] = 0.0
        return out

    def events(self, limit: int | None = None) -> Iterator[tuple[Kind, bytes]]:
        """Raw messages in production order, ``limit`` of them (None: without end)."""
        return itertools.islice(self._events(), limit)

    def _events(self) -> Iterator[tuple[Kind, bytes]]:
        """Raw messages without end; time advances one visit tick per round."""
        step_ms = 1000 / self.visits_per_second
        round_number, fraction = 0, 0.0
        rand = self._random
        while True:
            batch = self._visit() + self._due()
            round_number += 1
            if round_number % 50 == 0:
                batch += self._spend()
            for kind, doc in batch:
                payload = orjson.dumps(doc)
                if rand.random() < self.bad_share:
                    yield kind, rand.choice(BAD_PAYLOADS)
                yield kind, payload
                if rand.random() < self.duplicate_share:
                    yield kind, payload
            if self.clock_ms is not None:
                self.now_ms = self.clock_ms()
                continue
            fraction += step_ms
            whole = int(fraction)
            self.now_ms += whole
            fraction -= whole
