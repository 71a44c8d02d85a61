"""Table-driven tests for stream.core.money: amount parsing, exact conversion and rate tables."""

from decimal import Decimal

import pytest

from stream.core.money import MAX_AMOUNT, CurrencyError, RateTable, parse_amount, parse_rate_table

RATES = RateTable("USD", {"EUR": Decimal("1.08"), "GBP": Decimal("1.25"), "JPY": Decimal("0.0067")})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120.50", Decimal("120.50")),
        ("0", Decimal(0)),
        ("0.000001", Decimal("0.000001")),
        (0, Decimal(0)),
        (7, Decimal(7)),
        # A float goes through its shortest repr: 0.1 is exactly one tenth, not the binary expansion.
        (0.1, Decimal("0.1")),
        (19.99, Decimal("19.99")),
        ("1000000000000000", MAX_AMOUNT),
        (10**15, MAX_AMOUNT),
        ("1000000000000000.000", MAX_AMOUNT),
    ],
    ids=[
        "decimal-string",
        "zero-string",
        "one-micro",
        "zero-int",
        "int",
        "float-tenth",
        "float-cents",
        "max-string",
        "max-int",
        "max-with-zero-fraction",
    ],
)
def test_parse_amount(value, expected):
    parsed = parse_amount(value)
    assert isinstance(parsed, Decimal)
    assert parsed == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        "-0.01",
        -0.5,
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "sNaN",
        "Infinity",
        True,
        False,
        None,
        [1],
        {"value": 1},
        "abc",
        "",
        10**15 + 1,
        "1000000000000000.000001",
        "1e16",
        1e16,
    ],
    ids=[
        "negative-int",
        "negative-string",
        "negative-float",
        "nan",
        "inf",
        "minus-inf",
        "nan-string",
        "snan-string",
        "infinity-string",
        "true",
        "false",
        "none",
        "list",
        "dict",
        "garbage",
        "empty",
        "int-over-max",
        "string-just-over-max",
        "exponent-over-max",
        "float-over-max",
    ],
)
def test_parse_amount_rejects(value):
    with pytest.raises(ValueError):
        parse_amount(value)


@pytest.mark.parametrize(
    ("amount", "currency", "expected_micros"),
    [
        ("120.50", "USD", 120_500_000),
        ("0", "USD", 0),
        ("100", "EUR", 108_000_000),  # 100 * 1.08
        ("0.05", "EUR", 54_000),  # 0.054 exactly
        ("1", "JPY", 6_700),  # 0.0067
        ("1000000000000000", "USD", 10**21),
        # Banker's rounding at the sixth decimal: ties go to the even micro-unit.
        ("0.0000005", "USD", 0),
        ("0.0000015", "USD", 2),
        ("0.0000025", "USD", 2),
        ("0.0000035", "USD", 4),
        ("0.00000251", "USD", 3),
        ("0.00000049", "USD", 0),
        ("0.0000005", "GBP", 1),  # 0.000000625 is above the tie
        ("0.0000004", "GBP", 0),  # 0.0000005 is a tie: even 0
        ("0.0000012", "GBP", 2),  # 0.0000015 is a tie: even 2
        ("0.15", "JPY", 1_005),  # 0.001005 exactly
        ("0.075", "JPY", 502),  # 0.0005025 is a tie: even 0.000502
    ],
    ids=[
        "reporting-currency",
        "zero",
        "eur",
        "eur-fraction",
        "jpy",
        "max-amount",
        "tie-to-zero",
        "tie-up-to-2",
        "tie-down-to-2",
        "tie-up-to-4",
        "above-tie",
        "below-tie",
        "gbp-above-tie",
        "gbp-tie-to-even-0",
        "gbp-tie-to-even-2",
        "jpy-exact",
        "jpy-tie-to-even",
    ],
)
def test_to_micros_is_exact_with_bankers_rounding(amount, currency, expected_micros):
    micros = RATES.to_micros(Decimal(amount), currency)
    assert isinstance(micros, int)
    assert micros == expected_micros


@pytest.mark.parametrize("currency", ["CHF", "usd", ""], ids=["unknown", "lower-case-reporting", "empty"])
def test_to_micros_unknown_currency(currency):
    with pytest.raises(CurrencyError):
        RATES.to_micros(Decimal("1"), currency)


def test_currency_error_is_a_value_error():
    assert issubclass(CurrencyError, ValueError)


def test_to_micros_rounds_once():
    # 1.0000005000000000000000000001 (30 characters, schema-valid) is just above the tie: 1.000001.
    assert RATES.to_micros(Decimal("1.0000005000000000000000000001"), "USD") == 1_000_001


def test_to_micros_large_rate_does_not_overflow_context():
    table = RateTable("IRR", {"USD": Decimal("100000000")})
    # 1e15 USD * 1e8 = 1e23 IRR = 1e29 micro-units.
    assert table.to_micros(Decimal("1e15"), "USD") == 10**29


@pytest.mark.parametrize(
    ("reporting", "text", "expected_currency", "expected_rates"),
    [
        ("USD", "EUR=1.08,GBP=1.27", "USD", {"EUR": Decimal("1.08"), "GBP": Decimal("1.27")}),
        ("USD", "", "USD", {}),
        ("usd", "eur=1.08", "USD", {"EUR": Decimal("1.08")}),
        ("EUR", " USD = 0.92 , GBP=1.17 ,", "EUR", {"USD": Decimal("0.92"), "GBP": Decimal("1.17")}),
        ("USD", "JPY=0.0067", "USD", {"JPY": Decimal("0.0067")}),
    ],
    ids=["two-rates", "empty", "lower-case", "spaces-and-trailing-comma", "small-rate"],
)
def test_parse_rate_table(reporting, text, expected_currency, expected_rates):
    table = parse_rate_table(reporting, text)
    assert table.reporting_currency == expected_currency
    assert table.rates == expected_rates


@pytest.mark.parametrize(
    "text",
    [
        "EUR",
        "EUR=",
        "=1.08",
        "EURO=1.08",
        "E1R=1.08",
        "EUR=abc",
        "EUR=0",
        "EUR=-1.08",
        "EUR=NaN",
        "EUR=Infinity",
        "EUR:1.08",
    ],
    ids=[
        "no-equals",
        "no-rate",
        "no-code",
        "four-letters",
        "digit-in-code",
        "rate-not-number",
        "zero-rate",
        "negative-rate",
        "nan-rate",
        "infinite-rate",
        "colon",
    ],
)
def test_parse_rate_table_rejects(text):
    with pytest.raises(ValueError):
        parse_rate_table("USD", text)
