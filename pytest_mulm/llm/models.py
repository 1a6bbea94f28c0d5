"""The model and price table, as dated data (design.md §7).

Prices are USD per 1M tokens, i.e. micro-dollars per token, which is why costs come out
as whole micro-dollars without any float arithmetic. Every row names its source; the
table as a whole is as of ``PRICES_AS_OF``. Update the table, its date and the sources
together.

Unknown model names are normal (local OpenAI-compatible servers use any name they like),
so they are priced, never rejected: conservatively, as the most expensive active model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import date
from fractions import Fraction

__all__ = [
    "PRICES",
    "PRICES_AS_OF",
    "UNKNOWN_SOURCE",
    "WARN_DAYS",
    "ModelPrice",
    "active_models",
    "cost_micro",
    "default_model",
    "max_cost_micro",
    "model_price",
    "shutdown_warning",
]

PRICES_AS_OF = date(2026, 12, 1)
WARN_DAYS = 30  # warn this many days before a model's shutdown
UNKNOWN_SOURCE = "unknown model: priced as the most expensive active model"

_PRICING_PAGE = "openai.com/api/pricing, read 2026-12-01"
_PITFALLS = "pitfalls.md (2026-12)"


@dataclass(frozen=True)
class ModelPrice:
    """One model's list price in USD per 1M tokens and its lifecycle.

    ``shutdown`` is the first day the model no longer answers; ``replacement`` is the
    model its vendor names as successor (None when none was named). Reasoning models bill
    their hidden reasoning tokens as output tokens.
    """

    name: str
    input_per_m: float
    cached_input_per_m: float
    output_per_m: float
    shutdown: date | None
    replacement: str | None
    source: str
    reasoning: bool = False

    def is_active(self, today: date) -> bool:
        return self.shutdown is None or today < self.shutdown


_SHUTDOWN_2027 = date(2027, 1, 14)
_SHUTDOWN_2026 = date(2026, 10, 23)
_LUNA = "gpt-6-luna"

PRICES: dict[str, ModelPrice] = {
    row.name: row
    for row in (
        ModelPrice("gpt-6-luna", 0.10, 0.01, 0.50, None, None, _PITFALLS),
        ModelPrice("gpt-4o-mini", 0.15, 0.075, 0.60, _SHUTDOWN_2027, _LUNA, _PITFALLS),
        ModelPrice("gpt-4o", 2.50, 1.25, 10.00, _SHUTDOWN_2027, _LUNA,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}"),
        # the first gpt-4o snapshot kept its launch price and had no cached-input discount,
        # so it must not fall through to the gpt-4o row
        ModelPrice("gpt-4o-2024-05-13", 5.00, 5.00, 15.00, _SHUTDOWN_2027, _LUNA,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}"),
        ModelPrice("gpt-4.1", 2.00, 0.50, 8.00, _SHUTDOWN_2027, _LUNA,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}"),
        ModelPrice("gpt-4.1-mini", 0.40, 0.10, 1.60, _SHUTDOWN_2027, _LUNA,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}"),
        # pitfalls.md names no successor for the models shut down in October 2026;
        # shutdown_warning() then points at the cheapest active model instead
        ModelPrice("gpt-4.1-nano", 0.10, 0.025, 0.40, _SHUTDOWN_2026, None,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}"),
        ModelPrice("o3-mini", 1.10, 0.55, 4.40, _SHUTDOWN_2026, None,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}", reasoning=True),
        ModelPrice("o4-mini", 1.10, 0.275, 4.40, _SHUTDOWN_2026, None,
                   f"{_PRICING_PAGE}; shutdown {_PITFALLS}", reasoning=True),
    )
}

# dated snapshots (gpt-4o-mini-2024-07-18) are billed as their base model
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _exact(usd: float) -> Fraction:
    # str() of a float is the shortest decimal that round-trips, i.e. the literal typed in
    # the table (0.15, not 0.1499999999999999944...), so the Fraction is the exact price
    return Fraction(str(usd))


def _unknown(name: str) -> ModelPrice:
    # as of the table's date, not today: the price of an unknown model must not drop just
    # because the expensive models have since been shut down
    active = [p for p in PRICES.values() if p.is_active(PRICES_AS_OF)]
    return ModelPrice(
        name=name,
        input_per_m=max(p.input_per_m for p in active),
        cached_input_per_m=max(p.cached_input_per_m for p in active),
        output_per_m=max(p.output_per_m for p in active),
        shutdown=None,
        replacement=None,
        source=UNKNOWN_SOURCE,
    )


def model_price(name: str) -> ModelPrice:
    """The price row for ``name``; a dated snapshot maps to its base model.

    Never raises: an unknown name gets the conservative price described in the module
    docstring, with ``source == UNKNOWN_SOURCE`` so callers can tell.
    """
    if name in PRICES:
        return PRICES[name]
    base = _SNAPSHOT.sub("", name)
    if base != name and base in PRICES:
        return replace(PRICES[base], name=name)
    return _unknown(name)


def _today(today: date | None) -> date:
    return today if today is not None else date.today()


def active_models(today: date | None = None) -> list[ModelPrice]:
    """Models still answering on ``today``, cheapest (input + output) first."""
    day = _today(today)
    active = [p for p in PRICES.values() if p.is_active(day)]
    return sorted(active, key=lambda p: (_exact(p.input_per_m) + _exact(p.output_per_m), p.name))


def default_model(today: date | None = None) -> str:
    """The cheapest active model by input + output list price."""
    return active_models(today)[0].name


def shutdown_warning(name: str, today: date | None = None) -> str | None:
    """A one-line warning when ``name`` is shut down or shuts down within ``WARN_DAYS``."""
    price = model_price(name)
    if price.shutdown is None:
        return None
    day = _today(today)
    days_left = (price.shutdown - day).days
    if days_left > WARN_DAYS:
        return None
    successor = price.replacement
    if successor is None or not model_price(successor).is_active(day):
        successor = default_model(day)
    when = price.shutdown.isoformat()
    if days_left <= 0:
        return f"model {name} was shut down on {when}, use {successor}"
    unit = "day" if days_left == 1 else "days"
    return f"model {name} shuts down on {when} ({days_left} {unit}), replacement {successor}"


def _check_tokens(**counts: int) -> None:
    for field, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{field} must be a non-negative int, got {value!r}")


def cost_micro(name: str, tokens_in: int, tokens_out: int, cached_in: int = 0) -> int:
    """The list-price cost of one call in whole micro-dollars, rounded up.

    ``tokens_in`` includes the ``cached_in`` tokens (as in OpenAI's ``usage``), and
    ``tokens_out`` includes reasoning tokens.
    """
    _check_tokens(tokens_in=tokens_in, tokens_out=tokens_out, cached_in=cached_in)
    if cached_in > tokens_in:
        raise ValueError(f"cached_in ({cached_in}) cannot exceed tokens_in ({tokens_in})")
    price = model_price(name)
    # USD per 1M tokens == micro-dollars per token
    total = (
        (tokens_in - cached_in) * _exact(price.input_per_m)
        + cached_in * _exact(price.cached_input_per_m)
        + tokens_out * _exact(price.output_per_m)
    )
    return math.ceil(total)


def max_cost_micro(name: str, tokens_in: int, max_tokens: int) -> int:
    """The most one call can cost: no cache hit and all ``max_tokens`` used.

    ``max_tokens`` is the request's output cap (``max_completion_tokens`` for reasoning
    models, which covers the reasoning tokens too); this is what the ledger reserves.
    """
    return cost_micro(name, tokens_in, max_tokens)
