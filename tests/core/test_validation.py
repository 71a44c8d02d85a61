"""Table-driven tests for stream.core.validation: every rejection reason for every topic, and normalisation.

Every value in the example payloads carries the marker ``ZQX`` (or is the
e-mail address ``alice@example.com``) so the tests can check that a
rejection's ``detail`` never quotes the payload.
"""

import calendar
import copy
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.events import Event, Kind, Reason, Rejection
from stream.core.money import RateTable
from stream.core.validation import Validator

MAX_BYTES = 2048
RATES = RateTable("USD", {"EUR": Decimal("1.08"), "GBP": Decimal("1.25")})
MARKER = "ZQX"
EMAIL = "alice@example.com"
# 2026-11-22T08:15:00Z, by integer calendar arithmetic.
T0 = calendar.timegm((2026, 11, 22, 8, 15, 0, 0, 0, 0)) * 1000
MAX_EPOCH_MS = 253_402_300_799_999

DROP = object()

PAGE_VIEW = {
    "event_id": "pv-ZQX1",
    "ts": "2026-11-22T09:15:00+01:00",
    "visitor_id": "vis-ZQX2",
    "url": "https://ZQX3.example/pricing",
    "channel": "organic_ZQX",
    "campaign": "q4-ZQX",
}
LEAD = {
    "event_id": "ld-ZQX1",
    "ts": "2026-11-22T08:15:00Z",
    "lead_id": "lead-ZQX2",
    "channel": "paid_ZQX",
    "campaign": "webinar-ZQX",
    "visitor_id": "vis-ZQX2",
    "asset": "/ZQX/ebook",
    "owner": "owner-ZQX",
}
STAGE_CHANGE = {
    "event_id": "sc-ZQX1",
    "ts": T0,
    "lead_id": "lead-ZQX2",
    "stage": "opportunity",
    "amount": "2500.00",
    "currency": "EUR",
    "owner": "owner-ZQX",
}
SPEND = {
    "event_id": "sp-ZQX1",
    "ts": "2026-11-22T08:15:00.250Z",
    "channel": "paid_ZQX",
    "campaign": "q4-ZQX",
    "amount": "120.50",
    "currency": "USD",
}

BASES = {Kind.PAGE_VIEW: PAGE_VIEW, Kind.LEAD: LEAD, Kind.STAGE_CHANGE: STAGE_CHANGE, Kind.SPEND: SPEND}
REQUIRED = {
    Kind.PAGE_VIEW: ("event_id", "ts", "visitor_id", "url"),
    Kind.LEAD: ("event_id", "ts", "lead_id", "channel"),
    Kind.STAGE_CHANGE: ("event_id", "ts", "lead_id", "stage"),
    Kind.SPEND: ("event_id", "ts", "channel", "amount", "currency"),
}
STRING_FIELDS = {
    Kind.PAGE_VIEW: ("visitor_id", "url", "channel", "campaign"),
    Kind.LEAD: ("lead_id", "channel", "campaign", "visitor_id", "asset", "owner"),
    Kind.STAGE_CHANGE: ("lead_id", "owner"),
    Kind.SPEND: ("channel", "campaign"),
}
SHORT = {Kind.PAGE_VIEW: "pv", Kind.LEAD: "lead", Kind.STAGE_CHANGE: "sc", Kind.SPEND: "spend"}


def with_(base, **changes):
    """Copy of ``base`` with fields set; a value of DROP removes the field."""
    out = copy.deepcopy(base)
    for name, value in changes.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def js(doc):
    return orjson.dumps(doc)


def padded_to(doc, size):
    """``doc`` with an extra (ignored) field that makes its JSON exactly ``size`` bytes."""
    bare = js(with_(doc, padding=""))
    return js(with_(doc, padding="x" * (size - len(bare))))


@pytest.fixture(scope="module")
def validator():
    return Validator(RATES, MAX_BYTES)


# ------------------------------------------------------------------ rejections


def _rejection_cases():
    cases = []
    for kind, base in BASES.items():
        k = SHORT[kind]
        raw_cases = [
            (None, Reason.INVALID_JSON, "null-payload"),
            (b"", Reason.INVALID_JSON, "empty-bytes"),
            (js(base)[:-1], Reason.INVALID_JSON, "truncated"),
            (b"\xff\xfe" + js(base), Reason.INVALID_JSON, "not-utf8"),
            (b"{'event_id': 'x'}", Reason.INVALID_JSON, "single-quotes"),
            (b'{"amount": NaN}', Reason.INVALID_JSON, "nan-literal"),
            (b"[]", Reason.NOT_OBJECT, "array"),
            (b'"ZQX"', Reason.NOT_OBJECT, "string"),
            (b"42", Reason.NOT_OBJECT, "number"),
            (b"null", Reason.NOT_OBJECT, "json-null"),
            (b"true", Reason.NOT_OBJECT, "json-true"),
            (padded_to(base, MAX_BYTES + 1), Reason.TOO_LARGE, "one-byte-over"),
            (b"{" + b" " * (MAX_BYTES * 2) + b"}", Reason.TOO_LARGE, "over-before-parsing"),
        ]
        cases += [pytest.param(kind, raw, reason, id=f"{k}-{name}") for raw, reason, name in raw_cases]
        for name in REQUIRED[kind]:
            cases.append(
                pytest.param(kind, js(with_(base, **{name: DROP})), Reason.MISSING_FIELD, id=f"{k}-missing-{name}")
            )
        field_cases = [
            ("event_id", 12345, "event-id-int"),
            ("event_id", "", "event-id-empty"),
            ("event_id", "e" * 129, "event-id-129-chars"),
            ("event_id", None, "event-id-null"),
            ("ts", True, "ts-bool"),
            ("ts", 1_795_335_300_000.5, "ts-float"),
            ("ts", -1, "ts-negative"),
            ("ts", MAX_EPOCH_MS + 1, "ts-over-max"),
            ("ts", "2026-11-22T08:15:00", "ts-naive"),
            ("ts", "2026-02-30T08:15:00Z", "ts-feb-30"),
            ("ts", "2025-02-29T08:15:00Z", "ts-feb-29-non-leap"),
            ("ts", "22/11/2026 08:15", "ts-not-rfc3339"),
            ("ts", "20261122T081500Z", "ts-basic-iso"),
            ("ts", "1969-12-31T23:59:59Z", "ts-before-epoch"),
            ("ts", {"ms": T0}, "ts-object"),
        ]
        for name in STRING_FIELDS[kind]:
            field_cases += [(name, 7, f"{name}-int"), (name, "", f"{name}-empty"), (name, ["x"], f"{name}-list")]
        cases += [
            pytest.param(kind, js(with_(base, **{name: value})), Reason.INVALID_FIELD, id=f"{k}-{case_id}")
            for name, value, case_id in field_cases
        ]
    money_cases = [
        ("amount", -5, Reason.INVALID_FIELD, "amount-negative-number"),
        ("amount", "-5", Reason.INVALID_FIELD, "amount-negative-string"),
        ("amount", "1e3", Reason.INVALID_FIELD, "amount-exponent-string"),
        ("amount", "1,000.00", Reason.INVALID_FIELD, "amount-thousands-separator"),
        ("amount", "12.", Reason.INVALID_FIELD, "amount-trailing-dot"),
        ("amount", "1" * 31, Reason.INVALID_FIELD, "amount-string-31-chars"),
        ("amount", 1e16, Reason.INVALID_FIELD, "amount-over-1e15"),
        ("amount", None, Reason.INVALID_FIELD, "amount-null"),
        ("amount", True, Reason.INVALID_FIELD, "amount-bool"),
        ("amount", {"value": 1}, Reason.INVALID_FIELD, "amount-object"),
        ("currency", "eur", Reason.INVALID_FIELD, "currency-lower-case"),
        ("currency", "EURO", Reason.INVALID_FIELD, "currency-four-letters"),
        ("currency", 978, Reason.INVALID_FIELD, "currency-numeric"),
        ("currency", "CHF", Reason.UNKNOWN_CURRENCY, "currency-unknown"),
        ("currency", "XXX", Reason.UNKNOWN_CURRENCY, "currency-no-rate"),
    ]
    for kind in (Kind.STAGE_CHANGE, Kind.SPEND):
        cases += [
            pytest.param(kind, js(with_(BASES[kind], **{name: value})), reason, id=f"{SHORT[kind]}-{case_id}")
            for name, value, reason, case_id in money_cases
        ]
    cases += [
        pytest.param(
            Kind.STAGE_CHANGE,
            js(with_(STAGE_CHANGE, currency=DROP)),
            Reason.MISSING_FIELD,
            id="sc-amount-without-currency",
        ),
        pytest.param(
            Kind.STAGE_CHANGE,
            js(with_(STAGE_CHANGE, stage="lead")),
            Reason.INVALID_FIELD,
            id="sc-stage-lead-is-not-a-change",
        ),
        pytest.param(
            Kind.STAGE_CHANGE, js(with_(STAGE_CHANGE, stage="MQL")), Reason.INVALID_FIELD, id="sc-stage-upper-case"
        ),
        pytest.param(
            Kind.STAGE_CHANGE, js(with_(STAGE_CHANGE, stage="closed_ZQX")), Reason.INVALID_FIELD, id="sc-stage-unknown"
        ),
        pytest.param(Kind.STAGE_CHANGE, js(with_(STAGE_CHANGE, stage=3)), Reason.INVALID_FIELD, id="sc-stage-int"),
    ]
    return cases


REJECTION_CASES = _rejection_cases()


@pytest.mark.parametrize(("kind", "raw", "reason"), REJECTION_CASES)
def test_rejection_reason(validator, kind, raw, reason):
    result = validator.validate(kind, raw)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert isinstance(result.detail, str)
    assert result.detail


@pytest.mark.parametrize(("kind", "raw", "reason"), REJECTION_CASES)
def test_rejection_detail_never_quotes_the_payload(validator, kind, raw, reason):
    result = validator.validate(kind, raw)
    assert isinstance(result, Rejection)
    assert MARKER not in result.detail
    assert MARKER.lower() not in result.detail.lower()


EMAIL_CASES = [
    pytest.param(Kind.LEAD, js(with_(LEAD, event_id=EMAIL * 8)), Reason.INVALID_FIELD, id="lead-event-id-too-long"),
    pytest.param(Kind.LEAD, js(with_(LEAD, event_id=[EMAIL])), Reason.INVALID_FIELD, id="lead-event-id-list"),
    pytest.param(Kind.LEAD, js(with_(LEAD, lead_id={"email": EMAIL})), Reason.INVALID_FIELD, id="lead-id-object"),
    pytest.param(Kind.LEAD, js(with_(LEAD, channel=[EMAIL])), Reason.INVALID_FIELD, id="lead-channel-list"),
    pytest.param(Kind.LEAD, js(with_(LEAD, ts=EMAIL)), Reason.INVALID_FIELD, id="lead-ts-email"),
    pytest.param(Kind.LEAD, js(with_(LEAD, owner="x" * 250 + EMAIL)), Reason.INVALID_FIELD, id="lead-owner-too-long"),
    pytest.param(Kind.PAGE_VIEW, js(with_(PAGE_VIEW, visitor_id=[EMAIL])), Reason.INVALID_FIELD, id="pv-visitor-list"),
    pytest.param(Kind.STAGE_CHANGE, js(with_(STAGE_CHANGE, stage=EMAIL)), Reason.INVALID_FIELD, id="sc-stage-email"),
    pytest.param(Kind.STAGE_CHANGE, js(with_(STAGE_CHANGE, amount=EMAIL)), Reason.INVALID_FIELD, id="sc-amount-email"),
    pytest.param(Kind.SPEND, js(with_(SPEND, currency=EMAIL)), Reason.INVALID_FIELD, id="spend-currency-email"),
    pytest.param(Kind.SPEND, js(with_(SPEND, amount=EMAIL)), Reason.INVALID_FIELD, id="spend-amount-email"),
    pytest.param(
        Kind.SPEND,
        js(with_(SPEND, channel=DROP, note=EMAIL)),
        Reason.MISSING_FIELD,
        id="spend-missing-with-email-elsewhere",
    ),
    pytest.param(Kind.LEAD, b'{"lead_id": "' + EMAIL.encode() + b'"', Reason.INVALID_JSON, id="truncated-json"),
    pytest.param(Kind.LEAD, b'{"lead_id": ' + EMAIL.encode() + b"}", Reason.INVALID_JSON, id="bare-email-token"),
    pytest.param(Kind.LEAD, js(EMAIL), Reason.NOT_OBJECT, id="json-string"),
    pytest.param(Kind.LEAD, js([EMAIL]), Reason.NOT_OBJECT, id="json-list"),
    pytest.param(Kind.LEAD, padded_to(with_(LEAD, owner=EMAIL), MAX_BYTES + 10), Reason.TOO_LARGE, id="too-large"),
]


@pytest.mark.parametrize(("kind", "raw", "reason"), EMAIL_CASES)
def test_rejection_detail_never_contains_an_email_from_the_payload(validator, kind, raw, reason):
    result = validator.validate(kind, raw)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert EMAIL not in result.detail
    assert "alice" not in result.detail
    assert "example.com" not in result.detail


# --------------------------------------------------------------- normalisation

NORMALISED_CASES = [
    pytest.param(
        Kind.PAGE_VIEW,
        PAGE_VIEW,
        Event(
            Kind.PAGE_VIEW,
            "pv-ZQX1",
            T0,
            "vis-ZQX2",
            {
                "visitor": "vis-ZQX2",
                "url": "https://ZQX3.example/pricing",
                "channel": "organic_ZQX",
                "campaign": "q4-ZQX",
            },
        ),
        id="page-view-keyed-by-visitor",
    ),
    pytest.param(
        Kind.PAGE_VIEW,
        with_(PAGE_VIEW, channel=DROP, campaign=DROP, extra={"a": 1}),
        Event(
            Kind.PAGE_VIEW,
            "pv-ZQX1",
            T0,
            "vis-ZQX2",
            {"visitor": "vis-ZQX2", "url": "https://ZQX3.example/pricing", "channel": None, "campaign": None},
        ),
        id="page-view-optional-absent-extra-ignored",
    ),
    pytest.param(
        Kind.LEAD,
        LEAD,
        Event(
            Kind.LEAD,
            "ld-ZQX1",
            T0,
            "lead-ZQX2",
            {
                "channel": "paid_ZQX",
                "campaign": "webinar-ZQX",
                "visitor": "vis-ZQX2",
                "asset": "/ZQX/ebook",
                "owner": "owner-ZQX",
            },
        ),
        id="lead-keyed-by-lead-id",
    ),
    pytest.param(
        Kind.LEAD,
        with_(LEAD, campaign=DROP, visitor_id=DROP, asset=DROP, owner=DROP, ts=T0 + 1),
        Event(
            Kind.LEAD,
            "ld-ZQX1",
            T0 + 1,
            "lead-ZQX2",
            {"channel": "paid_ZQX", "campaign": None, "visitor": None, "asset": None, "owner": None},
        ),
        id="lead-minimal-epoch-ms",
    ),
    pytest.param(
        Kind.STAGE_CHANGE,
        STAGE_CHANGE,
        # 2500.00 EUR * 1.08 = 2700 USD
        Event(
            Kind.STAGE_CHANGE,
            "sc-ZQX1",
            T0,
            "lead-ZQX2",
            {"stage": "opportunity", "amount": 2_700_000_000, "owner": "owner-ZQX"},
        ),
        id="stage-change-amount-converted",
    ),
    pytest.param(
        Kind.STAGE_CHANGE,
        with_(STAGE_CHANGE, stage="mql", amount=DROP, currency=DROP, owner=DROP),
        Event(Kind.STAGE_CHANGE, "sc-ZQX1", T0, "lead-ZQX2", {"stage": "mql", "amount": None, "owner": None}),
        id="stage-change-without-amount",
    ),
    pytest.param(
        Kind.STAGE_CHANGE,
        with_(STAGE_CHANGE, stage="won", amount=1500, currency="USD"),
        Event(
            Kind.STAGE_CHANGE,
            "sc-ZQX1",
            T0,
            "lead-ZQX2",
            {"stage": "won", "amount": 1_500_000_000, "owner": "owner-ZQX"},
        ),
        id="stage-change-number-amount",
    ),
    pytest.param(
        Kind.STAGE_CHANGE,
        with_(STAGE_CHANGE, stage="lost", currency="USD", amount=DROP),
        Event(Kind.STAGE_CHANGE, "sc-ZQX1", T0, "lead-ZQX2", {"stage": "lost", "amount": None, "owner": "owner-ZQX"}),
        id="stage-change-currency-without-amount",
    ),
    pytest.param(
        Kind.SPEND,
        SPEND,
        Event(
            Kind.SPEND,
            "sp-ZQX1",
            T0 + 250,
            "sp-ZQX1",
            {"channel": "paid_ZQX", "campaign": "q4-ZQX", "amount": 120_500_000},
        ),
        id="spend-keyed-by-event-id",
    ),
    pytest.param(
        Kind.SPEND,
        with_(SPEND, campaign=DROP, amount=0.1, currency="GBP"),
        # 0.1 GBP * 1.25 = 0.125 USD
        Event(Kind.SPEND, "sp-ZQX1", T0 + 250, "sp-ZQX1", {"channel": "paid_ZQX", "campaign": None, "amount": 125_000}),
        id="spend-float-amount-gbp",
    ),
    pytest.param(
        Kind.SPEND,
        with_(SPEND, amount="0.0000025"),
        Event(Kind.SPEND, "sp-ZQX1", T0 + 250, "sp-ZQX1", {"channel": "paid_ZQX", "campaign": "q4-ZQX", "amount": 2}),
        id="spend-bankers-rounding",
    ),
    pytest.param(
        Kind.SPEND,
        with_(SPEND, amount="1000000000000000", ts=MAX_EPOCH_MS),
        Event(
            Kind.SPEND,
            "sp-ZQX1",
            MAX_EPOCH_MS,
            "sp-ZQX1",
            {"channel": "paid_ZQX", "campaign": "q4-ZQX", "amount": 10**21},
        ),
        id="spend-max-amount-max-ts",
    ),
    pytest.param(
        Kind.SPEND,
        with_(SPEND, event_id="e" * 128, ts="2026-11-22 09:15:00.250+01:00"),
        Event(
            Kind.SPEND,
            "e" * 128,
            T0 + 250,
            "e" * 128,
            {"channel": "paid_ZQX", "campaign": "q4-ZQX", "amount": 120_500_000},
        ),
        id="spend-128-char-event-id-space-separator",
    ),
]


@pytest.mark.parametrize(("kind", "doc", "expected"), NORMALISED_CASES)
def test_valid_event_is_normalised(validator, kind, doc, expected):
    assert validator.validate(kind, js(doc)) == expected


@pytest.mark.parametrize("kind", list(Kind), ids=[SHORT[k] for k in Kind])
def test_payload_of_exactly_the_limit_is_accepted(validator, kind):
    raw = padded_to(BASES[kind], MAX_BYTES)
    assert len(raw) == MAX_BYTES
    result = validator.validate(kind, raw)
    assert isinstance(result, Event)
    assert result.event_id == BASES[kind]["event_id"]


def test_last_microsecond_of_9999_is_accepted(validator):
    result = validator.validate(Kind.SPEND, js(with_(SPEND, ts="9999-12-31T23:59:59.999999Z")))
    assert isinstance(result, Event)
    assert result.ts == MAX_EPOCH_MS


def test_long_amount_is_rounded_once(validator):
    result = validator.validate(Kind.SPEND, js(with_(SPEND, amount="1.0000005000000000000000000001")))
    assert isinstance(result, Event)
    assert result.attrs["amount"] == 1_000_001


def test_validate_does_not_raise_on_huge_converted_amount():
    validator = Validator(RateTable("IRR", {"USD": Decimal("100000000")}), MAX_BYTES)
    result = validator.validate(Kind.SPEND, js(with_(SPEND, amount="1000000000000000")))
    assert isinstance(result, Event)
    assert result.attrs["amount"] == 10**29


# ---------------------------------------------------------------- robustness

_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
_FIELD_VALUES = (
    _JSON_SCALARS
    | st.sampled_from(["2026-11-22T08:15:00Z", "mql", "won", "USD", "EUR", "CHF", "12.50", "0", "1000000000000000"])
    | st.integers(min_value=0, max_value=MAX_EPOCH_MS)
    | st.lists(_JSON_SCALARS, max_size=3)
)
_FIELD_NAMES = st.sampled_from(
    [
        "event_id",
        "ts",
        "lead_id",
        "visitor_id",
        "url",
        "channel",
        "campaign",
        "stage",
        "amount",
        "currency",
        "owner",
        "asset",
    ]
)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(list(Kind)), doc=st.dictionaries(_FIELD_NAMES, _FIELD_VALUES, max_size=8))
def test_validate_returns_event_or_rejection_for_any_object(validator, kind, doc):
    result = validator.validate(kind, orjson.dumps(doc))
    if isinstance(result, Event):
        assert result.kind is kind
        assert 0 <= result.ts <= MAX_EPOCH_MS
        assert all(name in doc for name in REQUIRED[kind])
    else:
        assert isinstance(result, Rejection)
        assert result.reason in {Reason.MISSING_FIELD, Reason.INVALID_FIELD, Reason.UNKNOWN_CURRENCY}


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(list(Kind)), raw=st.binary(max_size=64))
def test_validate_returns_a_rejection_for_arbitrary_bytes(validator, kind, raw):
    result = validator.validate(kind, raw)
    # Random bytes are at best a JSON scalar or a tiny object that misses required fields.
    assert isinstance(result, Rejection)
    assert result.reason in set(Reason)
