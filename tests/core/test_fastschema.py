"""The msgspec fast path of validation (stream.core.fastschema) against the slow path it stands in for.

The fast path may only accept: what it accepts must be accepted by orjson and fastjsonschema too, and give the same
event. Everything else goes to the slow path, which words the rejection (tests/core/test_validation.py).
"""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.events import Event, Kind
from stream.core.fastschema import fast_decoder
from stream.core.validation import SCHEMA_FILES, Validator, load_schema
from tests.core.test_validation import BASES, DROP, MAX_EPOCH_MS, RATES, js, with_


@pytest.fixture(scope="module")
def validator():
    return Validator(RATES, 1 << 20)  # the size limit is checked before either path (test_validation.py)


def _fast_and_slow(validator, kind, raw):
    return validator._accept_fast(kind, raw), validator._validate_slow(kind, raw)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_input_schema_has_a_fast_path(kind):
    assert fast_decoder(load_schema(SCHEMA_FILES[kind])) is not None


@pytest.mark.parametrize("kind", list(Kind))
def test_the_valid_examples_take_the_fast_path(validator, kind):
    fast, slow = _fast_and_slow(validator, kind, js(BASES[kind]))
    assert isinstance(fast, Event)
    assert fast == slow


@pytest.mark.parametrize("rule", [
    {"type": "string", "format": "email"},
    {"type": "boolean"},
    {"type": "string", "minimum": 1},
    {"anyOf": [{"type": "string"}], "maxLength": 3},
    {"type": "string", "enum": ["a", 1]},
    {"type": "array"},
])
def test_a_rule_the_translation_does_not_know_leaves_the_kind_to_the_slow_path(rule):
    assert fast_decoder({"type": "object", "properties": {"x": rule}, "required": ["x"]}) is None


def test_a_dependency_on_a_field_the_schema_does_not_name_leaves_the_kind_to_the_slow_path():
    properties = {"a": {"type": "string"}}
    assert fast_decoder({"type": "object", "properties": properties, "dependencies": {"a": ["b"]}}) is None
    assert fast_decoder({"type": "object", "properties": properties, "dependencies": {"b": ["a"]}}) is None


def test_unknown_top_level_keywords_leave_the_kind_to_the_slow_path():
    assert fast_decoder({"type": "object", "properties": {}, "oneOf": []}) is None
    assert fast_decoder({"type": "object", "properties": {}, "required": ["x"]}) is None


# Inputs where msgspec and the slow path could differ: each is either refused by the fast path or accepted by both.
_EDGES = [
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":"2026-11-22T08:15:00Z\\n","visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1.0,"visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":true,"visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":%d,"visitor_id":"v","url":"u"}' % (MAX_EPOCH_MS + 1)),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":-1,"visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":"2026-02-30T08:15:00Z","visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"\\ud800","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"v","url":"u","channel":null}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"v","url":"u","channel":""}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"v","visitor_id":"w","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"v","url":"u","x":1e400}'),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"v","url":"u","x":99999999999999999999999}'),
    (Kind.PAGE_VIEW, b'{"event_id":"' + "\U0001F600".encode() * 128 + b'","ts":1,"visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b'{"event_id":"' + "\U0001F600".encode() * 129 + b'","ts":1,"visitor_id":"v","url":"u"}'),
    (Kind.PAGE_VIEW, b' {"event_id":"a","ts":1,"visitor_id":"v","url":"u"} '),
    (Kind.PAGE_VIEW, b'{"event_id":"a","ts":1,"visitor_id":"v","url":"u"}x'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":1}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":-0.0,"currency":"USD"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":1e400,"currency":"USD"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":9007199254740993,'
                        b'"currency":"USD"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":18446744073709551616,'
                        b'"currency":"USD"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":"12\\n","currency":"USD"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":"1","currency":"usd"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":"1","currency":"USD\\n"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"won","amount":"1","currency":"CHF"}'),
    (Kind.STAGE_CHANGE, b'{"event_id":"a","ts":1,"lead_id":"l","stage":"WON"}'),
    (Kind.SPEND, b'{"event_id":"a","ts":1,"channel":"c","amount":0.1,"currency":"EUR"}'),
    (Kind.SPEND, b'{"event_id":"a","ts":1,"channel":"c","amount":"1000000000000001","currency":"EUR"}'),
]


@pytest.mark.parametrize(("kind", "raw"), _EDGES)
def test_an_edge_is_refused_by_the_fast_path_or_accepted_by_both(validator, kind, raw):
    fast, slow = _fast_and_slow(validator, kind, raw)
    assert fast is None or fast == slow


def test_the_edges_include_inputs_each_path_accepts():
    """The edge table is not all refusals: some must pass both paths, or the test above could not fail."""
    validator = Validator(RATES, 1 << 20)
    accepted = [raw for kind, raw in _EDGES if validator._accept_fast(kind, raw) is not None]
    assert len(accepted) >= 5


_STRINGS = (st.text(max_size=6) | st.text(min_size=126, max_size=130) | st.sampled_from(
    ["", "x", "\n", "2026-11-22T08:15:00Z", "2026-11-22T08:15:00Z\n", "2026-11-22 08:15:00.123456789+05:30",
     "2026-13-01T00:00:00Z", "mql", "won", "USD", "EUR", "CHF", "usd", "12.50", "12.", "0", "-1",
     "1000000000000000", "\U0001F600" * 128, "\U0001F600" * 129]))
_VALUES = (st.none() | st.booleans() | _STRINGS
           | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson writes; larger ones: _EDGES
           | st.integers(min_value=0, max_value=MAX_EPOCH_MS + 1)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.lists(st.integers(min_value=0, max_value=9), max_size=2) | st.just(DROP))
_NAMES = st.sampled_from(["event_id", "ts", "lead_id", "visitor_id", "url", "channel", "campaign", "stage",
                          "amount", "currency", "owner", "asset", "extra"])


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(list(Kind)), changes=st.dictionaries(_NAMES, _VALUES, max_size=4))
def test_what_the_fast_path_accepts_the_slow_path_accepts_alike(validator, kind, changes):
    raw = orjson.dumps(with_(BASES[kind], **changes))
    fast, slow = _fast_and_slow(validator, kind, raw)
    assert fast is None or fast == slow
    assert validator.validate(kind, raw) == (fast if fast is not None else slow)


def test_a_dependency_is_kept_by_the_fast_path():
    decoder = fast_decoder({"type": "object", "required": ["a"], "dependencies": {"b": ["c"]},
                            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "string"}}})
    assert decoder.decode(b'{"a": 1, "b": "x"}') is None  # b without c
    assert decoder.decode(b'{"a": 1, "b": "x", "c": "y"}') == {"a": 1, "b": "x", "c": "y"}
    assert decoder.decode(b'{"a": 1}') == {"a": 1, "b": None, "c": None}
