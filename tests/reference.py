"""An independent batch computation of the core KPIs, written from KPIS.md and CONTRACT.md for the tests.

It shares no code with the streaming implementation: it takes the raw input
messages, keeps the valid first-seen ones, and computes every KPI record's
numerator and denominator directly.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

FUNNEL = ("lead", "mql", "sal", "sql", "opportunity", "won")
STAGES = {"mql", "sal", "sql", "opportunity", "won", "lost"}
HOUR = 3_600_000
DAY = 86_400_000


def _ms(ts: object) -> int | None:
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int):
        return ts
    if not isinstance(ts, str) or not (ts.endswith("Z") or "+" in ts[10:] or "-" in ts[10:]):
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if moment.tzinfo is None else round(moment.timestamp() * 1000)


_DURATION_MS = {"s": 1000, "m": 60_000, "h": HOUR, "d": DAY}


def window_start(ts: int, size: str, zone: str = "UTC", week_start: int = 0) -> int:
    """Start of the window of ``size`` holding ``ts``, as the README lays windows out in a reporting zone.

    Hours (and shorter sizes that divide one) follow the local clock, folds included (the repeated hour of a
    fall-back night is two windows); days, weeks (from ``week_start``, 0 = Monday), months, quarters and years
    begin at local midnight; sizes above an hour that divide a day are slots of the local day. Whole multiples of
    a day other than 1d are not covered here.
    """
    # replace, not + timedelta: arithmetic would lose the fold of a repeated hour.
    local = datetime.fromtimestamp(ts // 1000, ZoneInfo(zone)).replace(microsecond=ts % 1000 * 1000)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    if size == "1d":
        start = midnight
    elif size == "1w":
        start = midnight - timedelta(days=(local.weekday() - week_start) % 7)
        start = start.replace(fold=0)
    elif size == "1mo":
        start = midnight.replace(day=1)
    elif size == "1q":
        start = midnight.replace(day=1, month=local.month - (local.month - 1) % 3)
    elif size == "1y":
        start = midnight.replace(day=1, month=1)
    else:
        length = int(size[:-1]) * _DURATION_MS[size[-1]]
        if HOUR % length == 0:
            into_hour = (local.minute * 60 + local.second) * 1000 + local.microsecond // 1000
            # Within the hour, so on the same side of a fall-back: the same fold.
            start = (local - timedelta(milliseconds=into_hour % length)).replace(fold=local.fold)
        else:
            assert DAY % length == 0, size
            into_day = ((local.hour * 60 + local.minute) * 60 + local.second) * 1000
            start = midnight + timedelta(milliseconds=into_day - into_day % length)
    # Aware datetimes subtract as wall times: the instant comes from the zone's offset at the result.
    return round(start.timestamp() * 1000)


def window_starts(ts: int, size: str, zone: str = "UTC") -> list[int]:
    """Starts of the windows of ``size`` holding ``ts``: one for a calendar size; for a trailing size (``last7d``,
    README "Trailing windows") the N windows of N whole local days that end at the local midnights after ts's
    date, the first at the next one."""
    if not size.startswith("last"):
        return [window_start(ts, size, zone)]
    days = int(size[len("last"):-1])
    local = datetime.fromtimestamp(ts // 1000, ZoneInfo(zone))
    starts = []
    for end_after in range(1, days + 1):  # the window ending end_after midnights later starts days before that
        first = local.date() + timedelta(days=end_after - days)
        midnight = datetime(first.year, first.month, first.day, tzinfo=ZoneInfo(zone))
        starts.append(round(midnight.timestamp() * 1000))
    return starts


def iso(ms: int) -> str:
    """RFC 3339 UTC with second precision."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _amount_ok(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return False
    return amount.is_finite() and amount >= 0


def valid_first_seen(
    messages: list[tuple[str, bytes]], rates: dict[str, Decimal], max_bytes: int = 65536
) -> list[tuple[str, dict]]:
    """The messages that count: decodable objects with the required fields, first per (topic, event_id)."""
    required = {
        "page-views": ("visitor_id", "url"),
        "leads": ("lead_id", "channel"),
        "stage-changes": ("lead_id", "stage"),
        "spend": ("channel", "amount", "currency"),
    }
    seen: set[tuple[str, str]] = set()
    kept = []
    for topic, raw in messages:
        if len(raw) > max_bytes:
            continue
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("event_id"), str) or _ms(doc.get("ts")) is None:
            continue
        if any(not isinstance(doc.get(name), (str, int, float)) for name in required[topic]):
            continue
        if any(
            name in doc and not isinstance(doc[name], str)
            for name in ("channel", "campaign", "visitor_id", "asset", "owner", "url", "lead_id")
        ):
            continue
        if topic == "stage-changes" and doc["stage"] not in STAGES:
            continue
        if "amount" in doc and ("currency" not in doc or not _amount_ok(doc["amount"])):
            continue
        if "currency" in doc and doc["currency"] != "USD" and doc["currency"] not in rates:
            continue
        key = (topic, doc["event_id"])
        if key in seen:
            continue
        seen.add(key)
        kept.append((topic, doc))
    return kept


Key = tuple[str, str, int, tuple[tuple[str, str], ...]]
COHORT_WINDOW = 90 * DAY
LOOKBACK = 90 * DAY
HALF_LIFE = 7 * DAY
MODELS = ("first_touch", "last_touch", "linear", "position_based", "time_decay")


def _dims(**named: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in named.items() if v is not None))


def _levels(channel: str, campaign: str | None, with_campaign: bool = True) -> list[tuple[tuple[str, str], ...]]:
    levels = [_dims(), _dims(channel=channel)]
    if with_campaign and campaign is not None:
        levels.append(_dims(channel=channel, campaign=campaign))
    return levels


def _credit_shares(model: str, touch_times: list[int], converted_at: int) -> list[Fraction | float]:
    """Each touch's share of one conversion, written from the definitions in KPIS.md."""
    n = len(touch_times)
    if model == "first_touch":
        return [Fraction(1) if i == 0 else Fraction(0) for i in range(n)]
    if model == "last_touch":
        return [Fraction(1) if i == n - 1 else Fraction(0) for i in range(n)]
    if model == "linear":
        return [Fraction(1, n)] * n
    if model == "position_based":
        if n == 1:
            return [Fraction(1)]
        if n == 2:
            return [Fraction(1, 2)] * 2
        return [Fraction(2, 5)] + [Fraction(1, 5) / (n - 2)] * (n - 2) + [Fraction(2, 5)]
    decay = [2.0 ** (-(converted_at - t) / HALF_LIFE) for t in touch_times]
    return [d / sum(decay) for d in decay]


def compute(
    messages: list[tuple[str, bytes]], rates: dict[str, Decimal], sizes: tuple[str, ...] = ("1h", "1d"),
    zone: str = "UTC",
) -> dict[Key, tuple[object, object]]:
    """(kpi, size, start, sorted dims) -> (numerator, denominator) for every KPI with something behind it.

    Windows are those of ``sizes`` (as written in ``KPI_WINDOW_SIZES``, and ``last7d`` for the trailing windows of
    ``KPI_TRAILING_DAYS=7d``) laid out in ``zone``.
    """

    def at(ts: int, size: str) -> list[int]:
        return window_starts(ts, size, zone)

    events = valid_first_seen(messages, rates)
    created: dict[str, dict] = {}
    observed: dict[str, dict[str, tuple[int, Decimal | None, str | None]]] = defaultdict(dict)
    spend: list[tuple[int, str, str | None, Decimal]] = []
    views: list[tuple[int, str, str, str | None, str]] = []
    for topic, doc in events:
        ts = _ms(doc["ts"])
        assert ts is not None
        if topic == "leads":
            if doc["lead_id"] not in created or ts < created[doc["lead_id"]]["ts"]:
                created[doc["lead_id"]] = {"ts": ts, **doc}
        elif topic == "stage-changes":
            stages = observed[doc["lead_id"]]
            amount = None
            if "amount" in doc:
                amount = Decimal(str(doc["amount"])) * (
                    Decimal(1) if doc["currency"] == "USD" else rates[doc["currency"]]
                )
            if doc["stage"] not in stages or ts < stages[doc["stage"]][0]:
                stages[doc["stage"]] = (ts, amount, doc.get("owner"))
        elif topic == "spend":
            rate = Decimal(1) if doc["currency"] == "USD" else rates[doc["currency"]]
            spend.append((ts, doc["channel"], doc.get("campaign"), Decimal(str(doc["amount"])) * rate))
        else:
            views.append((ts, doc["visitor_id"], doc.get("channel") or "(none)", doc.get("campaign"), doc["url"]))
    counts: dict[tuple, int] = defaultdict(int)
    money: dict[tuple, Decimal] = defaultdict(Decimal)
    durations: dict[tuple, list[int]] = defaultdict(list)
    credits: dict[tuple, Fraction | float] = defaultdict(Fraction)

    def add(name: str, ts: int, dims: tuple[tuple[str, str], ...], n: int = 1) -> None:
        for size in sizes:
            if size.startswith("last") and name.startswith("cohort:"):
                continue  # cohorts have no trailing windows
            for start in at(ts, size):
                counts[(name, size, start, dims)] += n

    def add_money(name: str, ts: int, dims: tuple[tuple[str, str], ...], amount: Decimal) -> None:
        for size in sizes:
            for start in at(ts, size):
                money[(name, size, start, dims)] += amount

    lead_values: dict[str, dict] = {}
    for lead_id, lead in created.items():
        channel, campaign = lead["channel"], lead.get("campaign")
        seen = {stage: ts for stage, (ts, _, _) in observed.get(lead_id, {}).items()}
        seen["lead"] = min(lead["ts"], seen.get("lead", lead["ts"]))
        entered: dict[str, int] = {}
        for index, stage in enumerate(FUNNEL):
            later = [seen[s] for s in FUNNEL[index:] if s in seen]
            if later:
                entered[stage] = min(later)
        if "lost" in seen:
            entered["lost"] = seen["lost"]
        for stage, ts in entered.items():
            for dims in _levels(channel, campaign):
                add(stage, ts, dims)
        for a, b in zip(FUNNEL, FUNNEL[1:], strict=False):
            if a in entered and b in entered:
                for dims in _levels(channel, campaign, with_campaign=False):
                    for size in sizes:
                        for start in at(entered[b], size):
                            durations[(a, b, size, start, dims)].append(entered[b] - entered[a])
            if a in entered:
                converted = b in entered and entered[b] - entered[a] <= COHORT_WINDOW
                for dims in _levels(channel, campaign, with_campaign=False):
                    add(f"cohort:{a}>{b}", entered[a], dims)
                    add(f"cohort:{a}>{b}+", entered[a], dims, int(converted))
        value: dict = {"ts": lead["ts"]}
        for stage, name in (("opportunity", "pipeline"), ("won", "revenue")):
            ts_amount = observed.get(lead_id, {}).get(stage)
            if (
                stage in entered
                and ts_amount is not None
                and ts_amount[0] == entered[stage]
                and ts_amount[1] is not None
            ):
                for dims in _levels(channel, campaign):
                    add_money(name, entered[stage], dims, ts_amount[1])
                value[name] = (ts_amount[1], entered[stage])
                if name == "revenue":
                    add_money("share", entered[stage], _dims(), ts_amount[1])
                    add_money("share", entered[stage], _dims(channel=channel), ts_amount[1])
                    if campaign is not None:
                        add_money("share", entered[stage], _dims(channel=channel, campaign=campaign), ts_amount[1])
        for stage in ("won", "lost"):
            if stage in entered:
                observation = observed.get(lead_id, {}).get(stage)
                owner = observation[2] if observation is not None and observation[0] == entered[stage] else None
                add(f"owner:{stage}", entered[stage], _dims(owner=owner or lead.get("owner") or "(none)"))
        if lead.get("asset"):
            add("asset:leads", lead["ts"], _dims(asset=lead["asset"]))
        if lead.get("visitor_id"):
            lead_values[lead_id] = {"visitor": lead["visitor_id"], **value}
    for ts, channel, campaign, amount in spend:
        for dims in _levels(channel, campaign):
            add_money("spend", ts, dims, amount)
    visitor_buckets: set[tuple] = set()
    for ts, visitor, channel, _, url in views:
        for dims in (_dims(), _dims(channel=channel)):
            add("views", ts, dims)
            for size in sizes:
                for start in at(ts, size):
                    bucket = (visitor, size, start, dims)
                    if bucket not in visitor_buckets:
                        visitor_buckets.add(bucket)
                        counts[("visitors", size, start, dims)] += 1
        for size in sizes:
            for start in at(ts, size):
                bucket = (visitor, size, start, ("url", url))
                if bucket not in visitor_buckets:
                    visitor_buckets.add(bucket)
                    counts[("asset:visitors", size, start, _dims(asset=url))] += 1
    for value in lead_values.values():
        touches = sorted(
            (ts, channel, campaign or "")
            for ts, visitor, channel, campaign, _ in views
            if visitor == value["visitor"] and value["ts"] - LOOKBACK <= ts <= value["ts"]
        )
        if not touches:
            continue
        for model in MODELS:
            shares = _credit_shares(model, [t[0] for t in touches], value["ts"])
            for (_, channel, campaign), part in zip(touches, shares, strict=True):
                campaign_or_none = campaign or None
                for kind, amount, when in [("leads", 1, value["ts"])] + [
                    (kind, value[kind][0], value[kind][1]) for kind in ("pipeline", "revenue") if kind in value
                ]:
                    for dims in _levels(channel, campaign_or_none):
                        for size in sizes:
                            for start in at(when, size):
                                key = (kind, model, size, start, dims)
                                credits[key] += part * (
                                    Fraction(amount) if isinstance(part, Fraction) else float(amount))
    result = _records(counts, money, durations, credits)
    if any(size.startswith("last") for size in sizes):
        # A trailing window exists once event time reaches its last day: none ends after the latest event's day.
        latest = max(ts for ts in (_ms(doc["ts"]) for _, doc in events) if ts is not None)
        last_day = datetime.fromtimestamp(latest // 1000, ZoneInfo(zone)).date()
        for key in [key for key in result if key[1].startswith("last")]:
            first_day = datetime.fromtimestamp(key[2] // 1000, ZoneInfo(zone)).date()
            if first_day + timedelta(days=int(key[1][len("last"):-1]) - 1) > last_day:
                del result[key]
    return result


def _records(counts: dict, money: dict, durations: dict, credits: dict) -> dict[Key, tuple[object, object]]:
    result: dict[Key, tuple[object, object]] = {}

    def put(kpi: str, size: int, start: int, dims: tuple, numerator: object, denominator: object) -> None:
        if numerator or denominator:
            result[(kpi, size, start, dims)] = (numerator, denominator)

    cells = {(size, start, dims) for (name, size, start, dims) in counts if name in FUNNEL or name == "lost"}
    cells |= {(size, start, dims) for (name, size, start, dims) in money if name in ("spend", "pipeline", "revenue")}
    for size, start, dims in cells:
        c = {name: counts.get((name, size, start, dims), 0) for name in (*FUNNEL, "lost")}
        m = {name: float(money.get((name, size, start, dims), 0)) for name in ("spend", "revenue", "pipeline")}
        spend, revenue, won, lost, leads = m["spend"], m["revenue"], c["won"], c["lost"], c["lead"]
        put("cost_per_lead", size, start, dims, spend, leads)
        put("cost_per_mql", size, start, dims, spend, c["mql"])
        put("cost_per_acquisition", size, start, dims, spend, won)
        put("lead_to_opportunity", size, start, dims, c["opportunity"], leads)
        put("lead_to_customer", size, start, dims, won, leads)
        put("close_rate", size, start, dims, won, leads)
        put("win_rate", size, start, dims, won, won + lost)
        put("pipeline", size, start, dims, m["pipeline"], None)
        put("revenue", size, start, dims, revenue, None)
        put("average_deal_size", size, start, dims, revenue, won)
        put("average_lead_value", size, start, dims, revenue, leads)
        put("average_revenue_per_customer", size, start, dims, revenue, won)
        put("roas", size, start, dims, revenue, spend)
        put(
            "roi",
            size,
            start,
            dims,
            float(money.get(("revenue", size, start, dims), 0) - money.get(("spend", size, start, dims), 0)),
            spend,
        )
        for stage in (*FUNNEL, "lost"):
            put(f"{stage}_volume", size, start, dims, c[stage], None)
        for a, b in zip(FUNNEL, FUNNEL[1:], strict=False):
            put("conversion_rate", size, start, tuple(sorted((*dims, ("from_stage", a), ("to_stage", b)))), c[b], c[a])
    for (a, b, size, start, dims), values in durations.items():
        key_dims = tuple(sorted((*dims, ("from_stage", a), ("to_stage", b))))
        put("time_to_conversion", size, start, key_dims, sum(values) / 1000, len(values))
    for (name, size, start, dims), n in counts.items():
        if name.startswith("cohort:") and not name.endswith("+"):
            a, b = name[len("cohort:") :].split(">")
            key_dims = tuple(sorted((*dims, ("from_stage", a), ("to_stage", b))))
            put("cohort_conversion", size, start, key_dims, counts.get((name + "+", size, start, dims), 0), n)
        elif name.startswith("owner:"):
            won = counts.get(("owner:won", size, start, dims), 0)
            put("win_rate", size, start, dims, won, won + counts.get(("owner:lost", size, start, dims), 0))
        elif name in ("views", "visitors"):
            put("page_views" if name == "views" else "visitors", size, start, dims, n, None)
        elif name == "asset:visitors" or (
            name == "asset:leads" and ("asset:visitors", size, start, dims) not in counts
        ):
            put(
                "visit_to_lead",
                size,
                start,
                dims,
                counts.get(("asset:leads", size, start, dims), 0),
                counts.get(("asset:visitors", size, start, dims), 0),
            )
    for (name, size, start, dims), amount in money.items():
        if name == "share" and dims:
            put("revenue_contribution", size, start, dims, float(amount), float(money[("share", size, start, ())]))
    for (kind, model, size, start, dims), amount in credits.items():
        kpi = {"leads": "attributed_leads", "pipeline": "attributed_pipeline", "revenue": "attributed_revenue"}[kind]
        put(kpi, size, start, tuple(sorted((*dims, ("model", model)))), float(amount), None)
    return result


def median_seconds(values_ms: list[int]) -> float:
    """Median in seconds, mean of the middle two for an even count."""
    ordered = sorted(values_ms)
    mid = len(ordered) // 2
    return (ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2) / 1000


def p90_seconds(values_ms: list[int]) -> float:
    """90th percentile by nearest rank, in seconds."""
    ordered = sorted(values_ms)
    return ordered[max(1, math.ceil(0.9 * len(ordered))) - 1] / 1000


def from_records(records: list[dict]) -> dict[tuple[str, str, int, tuple[tuple[str, str], ...]], tuple[object, object]]:
    """The same shape from the last KPI record per key, for comparison with :func:`compute`."""
    out = {}
    for record in records:
        start = _ms(record["window"]["start"])
        assert start is not None
        size = record["window"]["size"]
        if record["window"].get("kind") == "trailing":
            size = f"last{size}"
        key = (record["kpi"], size, start, tuple(sorted(record["dimensions"].items())))
        if not (record["numerator"] or record["denominator"]):
            continue  # sent earlier and corrected back to nothing
        out[key] = (record["numerator"], record["denominator"])
    return out


def mismatches(got: dict[Key, tuple[object, object]], want: dict[Key, tuple[object, object]]) -> list[str]:
    """Keys whose parts differ: exact, but attribution credits within rounding to micro-units."""
    found = []
    for key in sorted(set(got) | set(want), key=str):
        a, b = got.get(key), want.get(key)
        if key[0].startswith("attributed_") and a is not None and b is not None:
            if abs(float(a[0]) - float(b[0])) <= 1e-4 * max(1.0, abs(float(b[0]))):  # type: ignore[arg-type]
                continue
        if a != b:
            found.append(f"{key}: streamed {a}, reference {b}")
    return found


FOLDED = ("channel", "campaign", "asset", "owner")  # the dimensions a value limit folds
OTHER = "other"


def _shape(key: Key) -> tuple[Any, ...]:
    """A record key with the folded dimensions' values left out: the records that share a level."""
    kpi, size, start, dims = key
    return kpi, size, start, tuple((name, value if name not in FOLDED else "*") for name, value in dims)


def _add(total: list[float], parts: tuple[object, object]) -> None:
    for i, part in enumerate(parts):
        if isinstance(part, int | float):
            total[i] += part


def assert_folded_exact(got: dict[Key, tuple[object, object]], want: dict[Key, tuple[object, object]],
                        limit: int) -> None:
    """KPI_VALUE_LIMIT: records naming a value equal the reference, and per level the named and `other`
    records together hold its total; no level of a window has more records than the limit allows."""
    named = {key: parts for key, parts in got.items() if OTHER not in dict(key[3]).values()}
    # A record that names a value is exact.
    assert not mismatches(named, {key: want[key] for key in named if key in want}), mismatches(
        named, {key: want[key] for key in named if key in want})
    assert all(key in want for key in named)
    # Per level, named and `other` records together hold everything (revenue shares: their numerators).
    sums_got: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    sums_want: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    records: Counter[tuple[Any, ...]] = Counter()
    for key, parts in got.items():
        _add(sums_got[_shape(key)], parts if key[0] != "revenue_contribution" else (parts[0], 0))
        records[_shape(key)] += 1
    for key, parts in want.items():
        _add(sums_want[_shape(key)], parts if key[0] != "revenue_contribution" else (parts[0], 0))
    assert set(sums_got) == set(sums_want)
    for shape, total in sums_want.items():
        # Attribution credits are rounded to micro-units per record, the reference's are exact.
        tolerance = 1e-4 if shape[0].startswith("attributed_") else 1e-6
        assert all(abs(a - b) <= tolerance * max(1.0, abs(b)) for a, b in zip(sums_got[shape], total, strict=True)), (
            shape, sums_got[shape], total)
    # No level of a window has more records than the limit allows (campaigns: twice, and each `other`).
    for shape, n in records.items():
        dims = dict(shape[3])
        assert n <= (2 * limit + 1 if "campaign" in dims else limit + 1 if set(dims) & set(FOLDED) else 1), (
            shape, n)
