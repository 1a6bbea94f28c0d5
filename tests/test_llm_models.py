"""The dated model and price table (design.md §7, pitfalls.md "LLM and cassettes")."""

from __future__ import annotations

from datetime import date

import pytest

from pytest_mulm.llm import models
from pytest_mulm.llm.models import (
    PRICES,
    PRICES_AS_OF,
    UNKNOWN_SOURCE,
    active_models,
    cost_micro,
    default_model,
    max_cost_micro,
    model_price,
    shutdown_warning,
)

DEC_2026 = date(2026, 12, 1)
SHUTDOWN = date(2027, 1, 14)


def test_table_holds_the_pitfalls_facts() -> None:
    mini = model_price("gpt-4o-mini")
    assert (mini.input_per_m, mini.cached_input_per_m, mini.output_per_m) == (0.15, 0.075, 0.60)
    assert mini.shutdown == SHUTDOWN and mini.replacement == "gpt-6-luna"
    luna = model_price("gpt-6-luna")
    assert (luna.input_per_m, luna.cached_input_per_m, luna.output_per_m) == (0.10, 0.01, 0.50)
    assert luna.shutdown is None
    for name in ("gpt-4o", "gpt-4.1", "gpt-4.1-mini"):
        assert model_price(name).shutdown == SHUTDOWN
        assert model_price(name).replacement == "gpt-6-luna"
    for name in ("gpt-4.1-nano", "o3-mini", "o4-mini"):
        assert model_price(name).shutdown == date(2026, 10, 23)
    assert model_price("o3-mini").reasoning and model_price("o4-mini").reasoning
    assert not model_price("gpt-4o").reasoning
    assert PRICES_AS_OF == date(2026, 12, 1)


def test_every_row_is_sourced_and_consistent() -> None:
    for name, row in PRICES.items():
        assert row.name == name
        assert row.source and row.source != UNKNOWN_SOURCE
        # a cached input token never costs more than an uncached one
        assert 0 <= row.cached_input_per_m <= row.input_per_m
        assert row.output_per_m >= 0
        if row.replacement is not None:
            assert row.replacement in PRICES


def test_dated_snapshot_maps_to_its_base() -> None:
    snap = model_price("gpt-4o-mini-2024-07-18")
    assert snap.name == "gpt-4o-mini-2024-07-18"
    assert snap.output_per_m == 0.60 and snap.shutdown == SHUTDOWN
    assert model_price("o3-mini-2025-01-31").reasoning
    # a snapshot with its own row keeps its own (launch) price
    assert model_price("gpt-4o-2024-05-13").input_per_m == 5.00
    assert model_price("gpt-4o-2024-08-06").input_per_m == 2.50


def test_unknown_model_is_priced_as_most_expensive_active_model() -> None:
    price = model_price("llama-3.1-8b-instruct")  # a local server's name: no error
    assert price.source == UNKNOWN_SOURCE
    assert price.name == "llama-3.1-8b-instruct"
    active = [p for p in PRICES.values() if p.is_active(PRICES_AS_OF)]
    assert price.input_per_m == max(p.input_per_m for p in active)
    assert price.output_per_m == max(p.output_per_m for p in active)
    # conservative: no known active model is dearer per call
    for row in active:
        assert cost_micro(price.name, 1000, 1000) >= cost_micro(row.name, 1000, 1000)
    # a shut-down model is never the reference (only active ones count)
    assert price.input_per_m >= model_price("gpt-4o").input_per_m


def test_active_models_and_default() -> None:
    names = [p.name for p in active_models(DEC_2026)]
    assert "gpt-4o-mini" in names and "gpt-6-luna" in names
    assert "o3-mini" not in names and "gpt-4.1-nano" not in names
    assert names[0] == "gpt-6-luna"  # cheapest first
    assert default_model(DEC_2026) == "gpt-6-luna"
    # on the shutdown day the model no longer answers
    assert "gpt-4o-mini" in [p.name for p in active_models(date(2027, 1, 13))]
    assert "gpt-4o-mini" not in [p.name for p in active_models(SHUTDOWN)]
    # before October 2026, gpt-4.1-nano (0.10 + 0.40) was cheaper than gpt-6-luna (0.60)
    assert default_model(date(2026, 10, 1)) == "gpt-4.1-nano"


def test_default_model_follows_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    cheaper = models.ModelPrice("cheap-x", 0.01, 0.01, 0.02, None, None, "test")
    monkeypatch.setitem(PRICES, "cheap-x", cheaper)
    assert default_model(DEC_2026) == "cheap-x"


def test_shutdown_warning_window() -> None:
    assert shutdown_warning("gpt-4o-mini", date(2026, 12, 14)) is None  # 31 days left
    msg = shutdown_warning("gpt-4o-mini", date(2026, 12, 15))  # 30 days left
    assert msg == "model gpt-4o-mini shuts down on 2027-01-14 (30 days), replacement gpt-6-luna"
    assert "(1 day)" in shutdown_warning("gpt-4o-mini", date(2027, 1, 13))
    gone = shutdown_warning("gpt-4o-mini", SHUTDOWN)
    assert gone == "model gpt-4o-mini was shut down on 2027-01-14, use gpt-6-luna"
    assert shutdown_warning("gpt-6-luna", DEC_2026) is None
    assert shutdown_warning("some-local-model", DEC_2026) is None


def test_shutdown_warning_without_named_replacement_points_at_default() -> None:
    msg = shutdown_warning("o3-mini", DEC_2026)
    assert msg == "model o3-mini was shut down on 2026-10-23, use gpt-6-luna"
    assert "2026-10-23" in shutdown_warning("o4-mini-2025-04-16", DEC_2026)


def test_cost_micro_is_exact_integer_rounded_up() -> None:
    # 0.15 $/M = 0.15 micro-dollars per token: 1M tokens in = 150,000 micro-dollars
    assert cost_micro("gpt-4o-mini", 1_000_000, 0) == 150_000
    assert cost_micro("gpt-4o-mini", 0, 1_000_000) == 600_000
    # 1000 in * 0.15 + 200 out * 0.60 = 150 + 120
    assert cost_micro("gpt-4o-mini", 1000, 200) == 270
    # 1 token in = 0.15 micro-dollars, rounded up to 1
    assert cost_micro("gpt-4o-mini", 1, 0) == 1
    assert cost_micro("gpt-4o-mini", 0, 0) == 0
    # float arithmetic drifts here: 3 * 0.1 = 0.30000000000000004 would round up to 1
    assert 3 * 0.1 > 0.3
    assert cost_micro("gpt-6-luna", 10, 0) == 1  # 10 * 0.10 = exactly 1
    assert cost_micro("gpt-6-luna", 30, 0) == 3
    # many tokens: 123,456,789 * 0.075 = 9,259,259.175 -> 9,259,260
    assert cost_micro("gpt-4o-mini", 123_456_789, 0, cached_in=123_456_789) == 9_259_260


def test_cost_micro_cached_input_is_cheaper() -> None:
    # 1000 tokens in, 600 of them cached: 400 * 0.15 + 600 * 0.075 = 60 + 45
    assert cost_micro("gpt-4o-mini", 1000, 0, cached_in=600) == 105
    assert cost_micro("gpt-6-luna", 1000, 0, cached_in=1000) == 10  # 1000 * 0.01
    with pytest.raises(ValueError, match="cached_in"):
        cost_micro("gpt-4o-mini", 10, 0, cached_in=11)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            cost_micro("gpt-4o-mini", bad, 0)


def test_max_cost_micro_assumes_no_cache_and_every_output_token() -> None:
    assert max_cost_micro("gpt-4o-mini", 1000, 500) == cost_micro("gpt-4o-mini", 1000, 500) == 450
    for cached in (0, 500, 1000):
        for out in (0, 250, 500):
            assert cost_micro("gpt-4o-mini", 1000, out, cached) <= max_cost_micro("gpt-4o-mini", 1000, 500)
    # unknown models get the conservative maximum, never zero
    assert max_cost_micro("my-local-model", 1000, 500) >= max_cost_micro("gpt-4o", 1000, 500) > 0
