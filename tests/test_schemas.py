"""Table-driven tests for the wire-contract JSON Schemas in schemas/.

Each schema has a list of examples that must validate and a list of examples
that must be rejected, each with a short id saying why.
"""
import copy
import json
from pathlib import Path

import fastjsonschema
import pytest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILES = [
    "page-view.schema.json",
    "lead.schema.json",
    "stage-change.schema.json",
    "spend.schema.json",
    "kpi-record.schema.json",
    "dead-letter.schema.json",
]
ID_PREFIX = "https://leadgen-kpi.invalid/schemas/"


def load(name):
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


_VALIDATORS = {}


def validator(name):
    if name not in _VALIDATORS:
        _VALIDATORS[name] = fastjsonschema.compile(load(name))
    return _VALIDATORS[name]


def with_(base, **changes):
    """Copy of base with fields set; a value of DROP removes the field."""
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if v is DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


DROP = object()

# ---------------------------------------------------------------- examples

PV = {"event_id": "pv-1", "ts": "2026-11-22T08:15:00Z",
      "visitor_id": "v-1", "url": "https://example.com/pricing"}
LEAD = {"event_id": "l-1", "ts": "2026-11-22T09:15:00+01:00",
        "lead_id": "L-1", "channel": "paid_social"}
SC = {"event_id": "sc-1", "ts": 1795335300000, "lead_id": "L-1", "stage": "mql"}
SPEND = {"event_id": "sp-1", "ts": "2026-11-22T08:15:00Z",
         "channel": "paid_social", "amount": "120.50", "currency": "USD"}
KPI = {
    "kpi": "cost_per_lead",
    "window": {"size": "1h", "start": "2026-11-22T08:00:00Z", "end": "2026-11-22T09:00:00Z", "zone": "UTC",
               "kind": "calendar"},
    "dimensions": {"channel": "paid_social", "campaign": "q4-webinar"},
    "value": 40.5,
    "numerator": 121.5,
    "denominator": 3,
    "unit": "USD",
    "final": False,
    "revision": 1,
    "emitted_at": "2026-11-22T09:00:05.123Z",
}
DL = {"topic": "leads", "partition": 0, "offset": 42, "reason": "invalid_json",
      "detail": "Expecting value: line 1 column 1 (char 0)", "payload": "not json"}

# Common ts / event_id cases applied to every input topic.
TS_VALID = [
    ("ts Z", "2026-11-22T08:15:00Z"),
    ("ts lowercase z and t", "2026-11-22t08:15:00z"),
    ("ts space separator", "2026-11-22 08:15:00Z"),
    ("ts positive offset", "2026-11-22T09:15:00+01:00"),
    ("ts negative offset", "2026-11-22T03:15:00-05:00"),
    ("ts fraction", "2026-11-22T08:15:00.123456Z"),
    ("ts int ms", 1795335300000),
    ("ts int zero", 0),
    ("ts int max", 253402300799999),
]
TS_INVALID = [
    ("ts without offset", "2026-11-22T08:15:00"),
    ("ts date only", "2026-11-22"),
    ("ts offset without colon", "2026-11-22T09:15:00+0100"),
    ("ts bad month", "2026-13-22T08:15:00Z"),
    ("ts bad hour", "2026-11-22T24:15:00Z"),
    ("ts trailing newline", "2026-11-22T08:15:00Z\n"),
    ("ts leading space", " 2026-11-22T08:15:00Z"),
    ("ts non-ascii digits", "٢٠٢٦-11-22T08:15:00Z"),
    ("ts as float", 1795335300000.5),
    ("ts as bool", True),
    ("ts negative int", -1),
    ("ts int beyond year 9999", 253402300800000),
    ("ts as numeric string", "1795335300000"),
    ("ts null", None),
]
EVENT_ID_INVALID = [
    ("missing event_id", DROP),
    ("event_id empty", ""),
    ("event_id too long", "x" * 129),
    ("event_id as int", 7),
    ("event_id null", None),
]


def common_cases(base):
    valid = [(f"common: {why}", with_(base, ts=ts)) for why, ts in TS_VALID]
    valid += [("common: event_id 128 chars", with_(base, event_id="x" * 128)),
              ("common: unknown extra field", with_(base, extra={"a": 1}, utm_source="x"))]
    invalid = [(f"common: {why}", with_(base, ts=ts)) for why, ts in TS_INVALID]
    invalid += [("common: missing ts", with_(base, ts=DROP))]
    invalid += [(f"common: {why}", with_(base, event_id=v)) for why, v in EVENT_ID_INVALID]
    invalid += [("common: not an object (array)", [base]),
                ("common: not an object (string)", "event"),
                ("common: not an object (null)", None)]
    return valid, invalid


def amount_cases(base):
    valid = [
        ("amount decimal string", with_(base, amount="1234.50")),
        ("amount integer string", with_(base, amount="0")),
        ("amount 30-char string", with_(base, amount="1" * 30)),
        ("amount number", with_(base, amount=99.99)),
        ("amount zero", with_(base, amount=0)),
        ("amount json exponent number", with_(base, amount=1e5)),
        ("currency EUR", with_(base, currency="EUR")),
    ]
    invalid = [
        ("negative amount", with_(base, amount=-0.01)),
        ("negative amount string", with_(base, amount="-1")),
        ("amount '1e5' string", with_(base, amount="1e5")),
        ("amount string with comma", with_(base, amount="1,5")),
        ("amount leading dot", with_(base, amount=".5")),
        ("amount trailing dot", with_(base, amount="1.")),
        ("amount empty string", with_(base, amount="")),
        ("amount with spaces", with_(base, amount=" 1")),
        ("amount 31-char string", with_(base, amount="1" * 31)),
        ("amount as bool", with_(base, amount=True)),
        ("amount null", with_(base, amount=None)),
        ("currency lowercase", with_(base, currency="usd")),
        ("currency two letters", with_(base, currency="US")),
        ("currency four letters", with_(base, currency="USDT")),
        ("currency as int", with_(base, currency=840)),
    ]
    return valid, invalid


def id_cases(base, fields, long_fields=()):
    """Empty, too long, and non-string for each id-like field present in base or optional."""
    invalid = []
    for f in fields:
        limit = 2048 if f in long_fields else 256
        invalid += [(f"{f} empty", with_(base, **{f: ""})),
                    (f"{f} too long", with_(base, **{f: "x" * (limit + 1)})),
                    (f"{f} not a string", with_(base, **{f: 1}))]
    valid = [(f"{f} at max length", with_(base, **{f: "x" * (2048 if f in long_fields else 256)}))
             for f in fields]
    return valid, invalid


def build_cases():
    cases = {}

    # page-views
    v, i = common_cases(PV)
    iv, ii = id_cases(PV, ["visitor_id", "url", "channel", "campaign"], long_fields=["url"])
    cases["page-view.schema.json"] = (
        [("minimal", PV),
         ("with channel and campaign", with_(PV, channel="organic_search", campaign="q4"))] + v + iv,
        [("missing visitor_id", with_(PV, visitor_id=DROP)),
         ("missing url", with_(PV, url=DROP))] + i + ii,
    )

    # leads
    v, i = common_cases(LEAD)
    iv, ii = id_cases(LEAD, ["lead_id", "channel", "campaign", "visitor_id", "asset", "owner"],
                      long_fields=["asset"])
    cases["lead.schema.json"] = (
        [("minimal", LEAD),
         ("all fields", with_(LEAD, campaign="q4-webinar", visitor_id="v-1",
                              asset="https://example.com/demo", owner="alice"))] + v + iv,
        [("missing lead_id", with_(LEAD, lead_id=DROP)),
         ("missing channel", with_(LEAD, channel=DROP)),
         ("channel null", with_(LEAD, channel=None))] + i + ii,
    )

    # stage-changes
    sc_money = with_(SC, stage="won", amount="5000.00", currency="USD")
    v, i = common_cases(SC)
    av, ai = amount_cases(sc_money)
    iv, ii = id_cases(SC, ["lead_id", "owner"])
    cases["stage-change.schema.json"] = (
        [("minimal", SC),
         ("won with amount", sc_money),
         ("opportunity with numeric amount", with_(SC, stage="opportunity", amount=100, currency="GBP")),
         ("currency without amount", with_(SC, currency="USD"))]
        + [(f"stage {s}", with_(SC, stage=s)) for s in ["mql", "sal", "sql", "opportunity", "won", "lost"]]
        + v + av + iv,
        [("missing lead_id", with_(SC, lead_id=DROP)),
         ("missing stage", with_(SC, stage=DROP)),
         ("unknown stage", with_(SC, stage="closed")),
         ("stage uppercase", with_(SC, stage="MQL")),
         ("stage lead is not a stage change", with_(SC, stage="lead")),
         ("amount without currency on stage change", with_(sc_money, currency=DROP))]
        + i + ai + ii,
    )

    # spend
    v, i = common_cases(SPEND)
    av, ai = amount_cases(SPEND)
    iv, ii = id_cases(SPEND, ["channel", "campaign"])
    cases["spend.schema.json"] = (
        [("minimal", SPEND), ("with campaign", with_(SPEND, campaign="q4-webinar"))] + v + av + iv,
        [("missing channel", with_(SPEND, channel=DROP)),
         ("missing amount", with_(SPEND, amount=DROP)),
         ("missing currency", with_(SPEND, currency=DROP))] + i + ai + ii,
    )

    # kpi records
    win = KPI["window"]
    ttc = with_(KPI, kpi="time_to_conversion", unit="seconds", value=3600.0, numerator=7200.0,
                denominator=2, stats={"count": 2, "mean": 3600.0, "median": 3600.0, "p90": 5400.0})
    cases["kpi-record.schema.json"] = (
        [("cost per lead", KPI),
         ("roll-up with empty dimensions", with_(KPI, dimensions={})),
         ("value null with zero denominator", with_(KPI, value=None, denominator=0)),
         ("denominator null", with_(KPI, denominator=None)),
         ("final revision 7", with_(KPI, final=True, revision=7)),
         ("conversion rate", with_(KPI, kpi="conversion_rate", unit="ratio", value=0.25, numerator=1,
                                   denominator=4, dimensions={"from_stage": "mql", "to_stage": "sql",
                                                              "channel": "email"})),
         ("time to conversion with stats", ttc),
         ("stats empty", with_(ttc, stats={"count": 0, "mean": None, "median": None, "p90": None})),
         ("window size 1d", with_(KPI, window=dict(win, size="1d", start="2026-11-22T00:00:00Z",
                                                   end="2026-11-23T00:00:00Z"))),
         ("window month in New York", with_(KPI, window={"size": "1mo", "start": "2026-11-01T00:00:00-04:00",
                                                         "end": "2026-12-01T00:00:00-05:00",
                                                         "zone": "America/New_York", "kind": "calendar"})),
         ("window hour in Kolkata", with_(KPI, window=dict(win, start="2026-11-22T08:00:00+05:30",
                                                           end="2026-11-22T09:00:00+05:30", zone="Asia/Kolkata"))),
         ("window sizes 1w 1q 1y", with_(KPI, window=dict(win, size="1w"))),
         ("window size 30s", with_(KPI, window=dict(win, size="30s"))),
         ("window size 15m", with_(KPI, window=dict(win, size="15m")))],
        [(f"missing {f}", with_(KPI, **{f: DROP})) for f in KPI]
        + [("unknown top-level field", with_(KPI, extra=1)),
           ("kpi empty", with_(KPI, kpi="")),
           ("window missing start", with_(KPI, window={"size": "1h", "end": win["end"]})),
           ("window extra field", with_(KPI, window=dict(win, tz="UTC"))),
           ("window size bad unit", with_(KPI, window=dict(win, size="1x"))),
           ("window size 2mo", with_(KPI, window=dict(win, size="2mo"))),
           ("window without zone", with_(KPI, window={k: v for k, v in win.items() if k != "zone"})),
           ("window without kind", with_(KPI, window={k: v for k, v in win.items() if k != "kind"})),
           ("window kind unknown", with_(KPI, window=dict(win, kind="sliding"))),
           ("window offset out of range", with_(KPI, window=dict(win, start="2026-11-22T09:00:00+25:00"))),
           ("window size no number", with_(KPI, window=dict(win, size="h"))),
           ("window size as int", with_(KPI, window=dict(win, size=3600))),
           ("window end without zone", with_(KPI, window=dict(win, end="2026-11-22T09:00:00"))),
           ("window start as int ms", with_(KPI, window=dict(win, start=1795334400000))),
           ("dimensions non-string value", with_(KPI, dimensions={"channel": 1})),
           ("dimensions null value", with_(KPI, dimensions={"channel": None})),
           ("dimensions as list", with_(KPI, dimensions=[])),
           ("value as string", with_(KPI, value="40.5")),
           ("value as bool", with_(KPI, value=True)),
           ("numerator null", with_(KPI, numerator=None)),
           ("denominator as string", with_(KPI, denominator="3")),
           ("unit empty", with_(KPI, unit="")),
           ("final as string", with_(KPI, final="true")),
           ("final as int", with_(KPI, final=1)),
           ("revision zero", with_(KPI, revision=0)),
           ("revision float", with_(KPI, revision=1.5)),
           ("revision as bool", with_(KPI, revision=True)),
           ("emitted_at with offset", with_(KPI, emitted_at="2026-11-22T10:00:05+01:00")),
           ("emitted_at int ms", with_(KPI, emitted_at=1795338005000)),
           ("stats missing p90", with_(ttc, stats={"count": 2, "mean": 1.0, "median": 1.0})),
           ("stats extra field", with_(ttc, stats=dict(ttc["stats"], p99=1.0))),
           ("stats count negative", with_(ttc, stats=dict(ttc["stats"], count=-1))),
           ("stats mean as string", with_(ttc, stats=dict(ttc["stats"], mean="1"))),
           ("stats null", with_(ttc, stats=None))],
    )

    # dead letters
    cases["dead-letter.schema.json"] = (
        [("utf-8 payload", DL),
         ("base64 payload", with_(DL, payload=DROP, payload_base64="/w==", reason="invalid_json")),
         ("empty payload", with_(DL, payload="", reason="invalid_json", detail="")),
         ("with key", with_(DL, key="L-1")),
         ("with key_base64", with_(DL, key_base64="AAEC")),
         ("with dead_lettered_at", with_(DL, dead_lettered_at="2026-11-22T09:00:00.5Z"))]
        + [(f"reason {r}", with_(DL, reason=r)) for r in
           ["invalid_json", "not_object", "too_large", "missing_field", "invalid_field",
            "unknown_currency", "late", "unknown_lead"]],
        [(f"missing {f}", with_(DL, **{f: DROP})) for f in ["topic", "partition", "offset", "reason", "detail"]]
        + [("neither payload nor payload_base64", with_(DL, payload=DROP)),
           ("both payload and payload_base64", with_(DL, payload_base64="/w==")),
           ("both key and key_base64", with_(DL, key="k", key_base64="aw==")),
           ("payload_base64 not base64", with_(DL, payload=DROP, payload_base64="not base64!")),
           ("payload_base64 bad padding", with_(DL, payload=DROP, payload_base64="abc")),
           ("key_base64 not base64", with_(DL, key_base64="%%%")),
           ("payload as object", with_(DL, payload={"a": 1})),
           ("unknown reason", with_(DL, reason="duplicate")),
           ("reason uppercase", with_(DL, reason="INVALID_JSON")),
           ("partition negative", with_(DL, partition=-1)),
           ("offset negative", with_(DL, offset=-1)),
           ("offset as string", with_(DL, offset="42")),
           ("offset as bool", with_(DL, offset=False)),
           ("partition float", with_(DL, partition=0.5)),
           ("topic empty", with_(DL, topic="")),
           ("detail too long", with_(DL, detail="x" * 1001)),
           ("dead_lettered_at with offset", with_(DL, dead_lettered_at="2026-11-22T10:00:00+01:00")),
           ("unknown field", with_(DL, event_id="e-1"))],
    )
    return cases


CASES = build_cases()


def _params(kind):
    idx = 0 if kind == "valid" else 1
    out = []
    for name, pair in CASES.items():
        for why, doc in pair[idx]:
            out.append(pytest.param(name, doc, id=f"{name.split('.')[0]}: {why}"))
    return out


# ------------------------------------------------------------------- tests

@pytest.mark.parametrize("schema_name,doc", _params("valid"))
def test_valid_examples_pass(schema_name, doc):
    validator(schema_name)(doc)  # raises JsonSchemaValueException if rejected


@pytest.mark.parametrize("schema_name,doc", _params("invalid"))
def test_invalid_examples_fail(schema_name, doc):
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validator(schema_name)(doc)


def test_every_schema_has_cases():
    assert sorted(CASES) == sorted(SCHEMA_FILES)
    for name, (valid, invalid) in CASES.items():
        assert valid and invalid, name
        ids = [why for why, _ in valid + invalid]
        assert len(ids) == len(set(ids)), f"duplicate case ids in {name}"


def test_schema_dir_holds_exactly_the_contract_schemas():
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(SCHEMA_FILES)


def _property_paths(schema, path="#"):
    """Yield (path, subschema) for every entry under any 'properties' keyword, recursively."""
    if isinstance(schema, dict):
        for key, sub in schema.items():
            if key == "properties" and isinstance(sub, dict):
                for prop, prop_schema in sub.items():
                    yield f"{path}/properties/{prop}", prop_schema
                    yield from _property_paths(prop_schema, f"{path}/properties/{prop}")
            elif isinstance(sub, (dict, list)):
                yield from _property_paths(sub, f"{path}/{key}")
    elif isinstance(schema, list):
        for n, sub in enumerate(schema):
            yield from _property_paths(sub, f"{path}/{n}")


@pytest.mark.parametrize("schema_name", SCHEMA_FILES)
def test_schema_metadata(schema_name):
    text = (SCHEMA_DIR / schema_name).read_text(encoding="utf-8")
    schema = json.loads(text)  # valid JSON
    assert schema.get("$schema") == "http://json-schema.org/draft-07/schema#"
    assert schema.get("$id") == ID_PREFIX + schema_name
    for key in ("title", "description"):
        assert isinstance(schema.get(key), str) and schema[key].strip(), f"{schema_name}: {key}"
    assert schema.get("type") == "object"
    props = list(_property_paths(schema))
    assert props, f"{schema_name} has no properties"
    for path, prop in props:
        assert isinstance(prop, dict), path
        desc = prop.get("description")
        assert isinstance(desc, str) and desc.strip(), f"{schema_name}: {path} has no description"
    for req in schema.get("required", []):
        assert req in schema["properties"], f"{schema_name}: required {req} not in properties"
    fastjsonschema.compile(schema)  # compiles as a schema


INPUT_SCHEMAS = ["page-view.schema.json", "lead.schema.json",
                 "stage-change.schema.json", "spend.schema.json"]


@pytest.mark.parametrize("schema_name", INPUT_SCHEMAS)
def test_input_schemas_allow_extra_fields_and_share_common_fields(schema_name):
    schema = load(schema_name)
    assert schema.get("additionalProperties", True) is True
    assert {"event_id", "ts"} <= set(schema["required"])
    assert schema["properties"]["ts"] == load(INPUT_SCHEMAS[0])["properties"]["ts"]
    assert schema["properties"]["event_id"] == load(INPUT_SCHEMAS[0])["properties"]["event_id"]


@pytest.mark.parametrize("schema_name", ["kpi-record.schema.json", "dead-letter.schema.json"])
def test_output_schemas_are_closed(schema_name):
    assert load(schema_name)["additionalProperties"] is False


def test_required_fields_match_contract():
    expected = {
        "page-view.schema.json": {"event_id", "ts", "visitor_id", "url"},
        "lead.schema.json": {"event_id", "ts", "lead_id", "channel"},
        "stage-change.schema.json": {"event_id", "ts", "lead_id", "stage"},
        "spend.schema.json": {"event_id", "ts", "channel", "amount", "currency"},
        "kpi-record.schema.json": {"kpi", "window", "dimensions", "value", "numerator",
                                   "denominator", "unit", "final", "revision", "emitted_at"},
        "dead-letter.schema.json": {"topic", "partition", "offset", "reason", "detail"},
    }
    for name, req in expected.items():
        assert set(load(name)["required"]) == req, name
