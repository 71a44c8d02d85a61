"""A fixed, mixed event set for end-to-end tests: duplicates, disorder, early changes, skipped stages, bad input."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

DAY_START = 1_763_798_400_000  # 2025-11-22T08:00:00Z
MINUTE = 60_000
EARLY_STAGE_LEADS = (3, 11, 27)
PAGES = (
    "/pricing",
    "/demo-request",
    "/blog/abm",
    "/ebook",
)  # leads whose first stage change is produced before the lead itself


def doc(event_id: str, ts: int, **fields: object) -> bytes:
    return json.dumps({"event_id": event_id, "ts": ts, **fields}).encode()


def good_events(seed: int = 7, leads: int = 60) -> list[tuple[str, bytes]]:
    """Valid events over a few hours, in production order (before any shuffling)."""
    rand = random.Random(seed)
    channels = [
        ("paid_social", "q4-webinar"),
        ("paid_social", "ebook"),
        ("email", "newsletter"),
        ("organic_search", None),
    ]
    out: list[tuple[str, bytes]] = []
    for i in range(leads):
        channel, campaign = channels[i % len(channels)]
        created = DAY_START + rand.randrange(0, 180) * MINUTE
        fields: dict[str, object] = {"lead_id": f"L{i}", "channel": channel, "visitor_id": f"v{i}"}
        if campaign:
            fields["campaign"] = campaign
        # The visitor's path: one to four visits before converting (touches), one page after it (not a touch).
        for k in range(rand.randint(1, 4)):
            touch_channel, touch_campaign = rand.choice(channels)
            view: dict[str, object] = {"visitor_id": f"v{i}", "url": rand.choice(PAGES), "channel": touch_channel}
            if touch_campaign:
                view["campaign"] = touch_campaign
            out.append(("page-views", doc(f"pv{i}-{k}", created - rand.randrange(1, 20) * MINUTE, **view)))
        out.append(("page-views", doc(f"pv{i}-after", created + 2 * MINUTE, visitor_id=f"v{i}", url="/thanks")))
        fields["asset"] = rand.choice(PAGES)
        fields["owner"] = f"rep-{i % 3}"
        out.append(("leads", doc(f"lead{i}", created, **fields)))
        ts = created
        for stage in ("mql", "sal", "sql", "opportunity", "won"):
            if i in EARLY_STAGE_LEADS and stage == "mql":
                ts += 2 * MINUTE
                out.append(("stage-changes", doc(f"sc{i}-{stage}", ts, lead_id=f"L{i}", stage=stage)))
                continue
            if rand.random() < 0.35:
                if rand.random() < 0.5:
                    out.append(
                        (
                            "stage-changes",
                            doc(
                                f"sc{i}-lost",
                                ts + 7 * MINUTE,
                                lead_id=f"L{i}",
                                stage="lost",
                                owner=f"rep-{(i + 1) % 3}",
                            ),
                        )
                    )
                break
            ts += rand.randrange(1, 90) * MINUTE
            if stage in ("sal", "sql") and rand.random() < 0.3:
                continue  # skipped in the CRM: implied by the next stage
            extra: dict[str, object] = {}
            if stage in ("opportunity", "won"):
                extra = {"amount": str(rand.randrange(1, 50) * 1000), "currency": rand.choice(["USD", "EUR"])}
            out.append(("stage-changes", doc(f"sc{i}-{stage}", ts, lead_id=f"L{i}", stage=stage, **extra)))
        if i % 9 == 0:
            # A later correction: the lead was in fact qualified earlier than first reported.
            out.append(("stage-changes", doc(f"sc{i}-mql-early", created + MINUTE, lead_id=f"L{i}", stage="mql")))
    for j in range(30):
        # Visitors who never convert.
        out.append(
            (
                "page-views",
                doc(
                    f"anon{j}",
                    DAY_START + rand.randrange(0, 240) * MINUTE,
                    visitor_id=f"anon-{j % 17}",
                    url=rand.choice(PAGES),
                    **({"channel": rand.choice(channels)[0]} if j % 4 else {}),
                ),
            )
        )
    for hour in range(4):
        for channel, campaign in channels[:3]:
            fields = {"channel": channel, "amount": f"{250 + hour * 10}.50", "currency": "USD"}
            if campaign:
                fields["campaign"] = campaign
            out.append(
                (
                    "spend",
                    doc(f"sp{hour}-{channel}-{campaign}", DAY_START + hour * 60 * MINUTE + 30 * MINUTE, **fields),
                )
            )
    out.append(("spend", doc("sp-eur", DAY_START + 10 * MINUTE, channel="email", amount=100, currency="EUR")))
    return out


def bad_events() -> list[tuple[str, bytes, str]]:
    """Inputs that must be dead-lettered, with the reason expected."""
    ts = DAY_START + 30 * MINUTE
    return [
        ("leads", b"{not json", "invalid_json"),
        ("leads", b"\xff\xfe\x00\x01", "invalid_json"),
        ("page-views", b"[1, 2]", "not_object"),
        ("page-views", b'"a string"', "not_object"),
        ("leads", doc("bad1", ts, channel="email"), "missing_field"),
        ("stage-changes", doc("bad2", ts, lead_id="L1", stage="mql", amount="5"), "missing_field"),
        ("stage-changes", doc("bad3", ts, lead_id="L1", stage="promoted"), "invalid_field"),
        (
            "leads",
            json.dumps({"event_id": "bad4", "ts": True, "lead_id": "x", "channel": "c"}).encode(),
            "invalid_field",
        ),
        (
            "leads",
            json.dumps({"event_id": "bad5", "ts": "2025-11-22T08:00:00", "lead_id": "x", "channel": "c"}).encode(),
            "invalid_field",
        ),
        ("spend", doc("bad6", ts, channel="email", amount="-5", currency="USD"), "invalid_field"),
        ("spend", doc("bad7", ts, channel="email", amount="12", currency="XYZ"), "unknown_currency"),
        ("page-views", doc("bad8", ts, visitor_id="v", url="/" + "x" * 70_000), "too_large"),
        ("page-views", doc("bad9", ts, visitor_id="v", url="/", email="ceo@example.com", channel=7), "invalid_field"),
    ]


def mixed(
    seed: int = 7, shuffle_within_ms: int = 5 * MINUTE, order_seed: int | None = None
) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """Good events with duplicates and bad ones mixed in, shuffled locally (disorder within the lateness).

    Returns the messages and how many of each outcome (valid, duplicate, rejected) the contract expects.
    """
    rand = random.Random(seed if order_seed is None else order_seed)
    good = good_events(seed)
    # Local disorder: sort by event time with jitter smaller than the allowed lateness.
    keyed = [(json.loads(raw)["ts"] + rand.randrange(0, shuffle_within_ms), topic, raw) for topic, raw in good]
    keyed.sort(key=lambda item: item[0])
    ordered = [(topic, raw) for _, topic, raw in keyed]
    # Some stage changes before their lead: move a few leads' creation behind their first stage change.
    for i in EARLY_STAGE_LEADS:
        lead_index = next(k for k, (t, r) in enumerate(ordered) if t == "leads" and json.loads(r)["lead_id"] == f"L{i}")
        lead = ordered.pop(lead_index)
        first_change = next(
            k for k, (t, r) in enumerate(ordered) if t == "stage-changes" and json.loads(r)["event_id"] == f"sc{i}-mql"
        )
        ordered.insert(first_change + 1, lead)
    duplicates = [ordered[k] for k in range(0, len(ordered), 7)]
    messages = list(ordered)
    for dup in duplicates:
        messages.insert(rand.randrange(messages.index(dup) + 1, len(messages) + 1), dup)
    for topic, raw, _ in bad_events():
        messages.insert(rand.randrange(0, len(messages) + 1), (topic, raw))
    return messages, {"valid": len(good), "duplicate": len(duplicates), "rejected": len(bad_events())}


def retimed(messages: list[tuple[str, bytes]], to_ts: Callable[[int], int]) -> list[tuple[str, bytes]]:
    """The same messages, each valid event's integer ``ts`` mapped by ``to_ts`` (bad input stays as it was)."""
    moved = []
    for topic, raw in messages:
        try:
            event = json.loads(raw)
        except ValueError:
            moved.append((topic, raw))
            continue
        if isinstance(event, dict) and type(event.get("ts")) is int:
            event["ts"] = to_ts(event["ts"])
            raw = json.dumps(event).encode()
        moved.append((topic, raw))
    return moved


def shifted(messages: list[tuple[str, bytes]], by_ms: int) -> list[tuple[str, bytes]]:
    """The same messages, each valid event's integer ``ts`` moved by ``by_ms`` (bad input stays as it was)."""
    return retimed(messages, lambda ts: ts + by_ms)


def heartbeats(topics: list[str], partitions: int, ts: int) -> list[tuple[str, int, bytes]]:
    """One valid page view per input partition at ``ts``: moves every partition's progress past the data."""
    return [(topic, p, _heartbeat(topic, p, ts)) for topic in topics for p in range(partitions)]


def _heartbeat(topic: str, partition: int, ts: int) -> bytes:
    event_id = f"hb-{topic}-{partition}-{ts}"
    if topic.endswith("page-views"):
        return doc(event_id, ts, visitor_id="heartbeat", url="/heartbeat")
    if topic.endswith("leads"):
        return doc(event_id, ts, lead_id=f"hb-{partition}", channel="heartbeat")
    if topic.endswith("stage-changes"):
        return doc(event_id, ts, lead_id=f"hb-{partition}", stage="mql")
    return doc(event_id, ts, channel="heartbeat", amount="0", currency="USD")
