"""Exact money: decimal parsing and conversion to the reporting currency in integer micro-units."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

# Amounts are kept as integer millionths of the reporting currency: exact sums,
# and enough precision for converted amounts and per-lead costs of fractions of a cent.
MICROS_PER_UNIT = 1_000_000
_MICRO = Decimal("0.000001")
# Larger amounts are treated as bad input rather than business data (1e15 is a
# thousand trillion in any currency).
MAX_AMOUNT = Decimal("1e15")


class CurrencyError(ValueError):
    """The amount's currency has no configured rate."""


def parse_amount(value: object) -> Decimal:
    """Parse the contract's amount (decimal string or JSON number, >= 0).

    Raises:
        ValueError: when the value is not a finite non-negative decimal.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("amount must be a decimal string or a number")
    try:
        amount = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError(f"amount {value!r} is not finite")
    if amount < 0:
        raise ValueError(f"amount {value!r} is negative")
    if amount > MAX_AMOUNT:
        raise ValueError(f"amount {value!r} is larger than {MAX_AMOUNT:,.0f}")
    return amount


@dataclass(frozen=True)
class RateTable:
    """Exchange rates to one reporting currency: ``rates['EUR'] = 1.08`` means 1 EUR = 1.08 units."""

    reporting_currency: str
    rates: dict[str, Decimal]

    def to_micros(self, amount: Decimal, currency: str) -> int:
        """Convert ``amount`` in ``currency`` to micro-units of the reporting currency.

        Raises:
            CurrencyError: when the currency has no rate.
        """
        if currency == self.reporting_currency:
            rate = Decimal(1)
        else:
            found = self.rates.get(currency)
            if found is None:
                raise CurrencyError(f"no exchange rate for currency {currency!r}")
            rate = found
        # Enough digits that the product is exact and only the quantisation to micro-units rounds.
        with localcontext() as context:
            context.prec = 100
            converted = (amount * rate).quantize(_MICRO, rounding=ROUND_HALF_EVEN)
            return int(converted * MICROS_PER_UNIT)


def parse_rate_table(reporting_currency: str, text: str) -> RateTable:
    """Parse ``EUR=1.08,GBP=1.27`` (units of the reporting currency per unit of each currency).

    Raises:
        ValueError: when an entry is malformed or a rate is not positive.
    """
    rates: dict[str, Decimal] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        code, sep, rate_text = entry.partition("=")
        code = code.strip().upper()
        if not sep or len(code) != 3 or not code.isalpha():
            raise ValueError(f"bad exchange rate entry {entry!r} (expected e.g. EUR=1.08)")
        try:
            rate = Decimal(rate_text.strip())
        except InvalidOperation:
            raise ValueError(f"bad exchange rate {rate_text!r} for {code}") from None
        if not rate.is_finite() or rate <= 0:
            raise ValueError(f"exchange rate for {code} must be positive, got {rate_text!r}")
        if code in rates:
            raise ValueError(f"exchange rate for {code} is given twice")
        rates[code] = rate
    return RateTable(reporting_currency=reporting_currency.upper(), rates=rates)


def micros_to_float(micros: int) -> float:
    """Leave the exact domain at the edge (JSON numbers, gauges)."""
    return micros / MICROS_PER_UNIT
