"""The budget ledger shared by every process (design.md §7; pitfalls.md: a JSON total
updated read-modify-write by 8 processes lost 99 % of its charges)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from pytest_mulm.errors import MulmError
from pytest_mulm.llm.ledger import (
    BudgetAlert,
    BudgetExhausted,
    Ledger,
    LedgerError,
    Reservation,
    format_usd,
    usd_to_micro,
)

ROOT = Path(__file__).resolve().parents[1]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "ledger.jsonl"


def test_reserve_settle_and_totals(path: Path) -> None:
    ledger = Ledger(path, 0.01)  # 10,000 micro-dollars
    r = ledger.reserve(3_000, label="doc for iris")
    assert isinstance(r, Reservation) and r.micro == 3_000
    t = ledger.totals()
    assert (t.spent_micro, t.reserved_micro, t.calls, t.remaining_micro) == (0, 3_000, 0, 7_000)
    assert ledger.settle(r, 1_234) is None
    t = ledger.totals()
    assert (t.spent_micro, t.reserved_micro, t.calls, t.remaining_micro) == (1_234, 0, 1, 8_766)
    assert t.budget_micro == 10_000 and t.fraction == pytest.approx(0.1234)


def test_reservation_that_does_not_fit_is_refused(path: Path) -> None:
    ledger = Ledger(path, "0.001")  # 1,000 micro-dollars
    first = ledger.reserve(600)
    assert ledger.reserve(500) is None  # 600 + 500 > 1000: nothing may be sent
    second = ledger.reserve(400)  # exactly the budget is allowed
    assert first and second
    assert ledger.reserve(1) is None
    ledger.settle(first, 100)  # frees 500 of the reservation
    third = ledger.reserve(500)
    assert third is not None
    t = ledger.totals()
    assert t.spent_micro + t.reserved_micro == 1_000 and t.refused == 2


def test_zero_budget_reserves_nothing(path: Path) -> None:
    ledger = Ledger(path, 0)
    assert ledger.reserve(0) is None
    assert ledger.reserve(1) is None
    t = ledger.totals()
    assert t.spent_micro == 0 and t.refused == 2 and t.fraction == 1.0 and t.remaining_micro == 0


def test_cancel_frees_the_reservation(path: Path) -> None:
    ledger = Ledger(path, 0.001)
    r = ledger.reserve(1_000)
    assert ledger.reserve(1) is None
    ledger.cancel(r)
    t = ledger.totals()
    assert (t.spent_micro, t.reserved_micro, t.cancelled, t.calls) == (0, 0, 1, 0)
    assert ledger.reserve(1_000) is not None


def test_a_reservation_closes_exactly_once(path: Path, tmp_path: Path) -> None:
    ledger = Ledger(path, 1)
    r = ledger.reserve(10)
    ledger.settle(r, 5)
    with pytest.raises(LedgerError, match="not open"):
        ledger.settle(r, 5)
    with pytest.raises(LedgerError):
        ledger.cancel(r)
    other = Ledger(tmp_path / "other.jsonl", 1).reserve(10)
    with pytest.raises(LedgerError):
        ledger.settle(other, 1)
    assert ledger.totals().spent_micro == 5


def test_charge_above_the_reservation_is_clamped_and_noted(path: Path) -> None:
    ledger = Ledger(path, 0.001)
    r = ledger.reserve(400)
    ledger.settle(r, 700)
    t = ledger.totals()
    assert t.spent_micro == 400 and t.overrun_micro == 300
    settle = [rec for rec in lines(path) if rec["kind"] == "settle"][0]
    assert settle["micro"] == 400 and settle["clamped_from"] == 700 and settle["reserved"] == 400
    # the invariant the hard stop relies on still holds
    assert t.spent_micro + t.reserved_micro <= t.budget_micro


def test_alert_fires_once_at_95_percent(path: Path) -> None:
    ledger = Ledger(path, 0.001)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ledger.settle(ledger.reserve(940), 940) is None  # 94 %
        message = ledger.settle(ledger.reserve(10), 10)  # 95 %
        assert message is not None
        assert ledger.settle(ledger.reserve(10), 10) is None
        # another process (its own Ledger instance) does not alert again
        assert Ledger(path, 0.001).settle(Ledger(path, 0.001).reserve(10), 10) is None
    alerts = [w for w in caught if issubclass(w.category, BudgetAlert)]
    assert len(alerts) == 1 and str(alerts[0].message) == message
    assert "$0.00095 of $0.001" in message and "--mulm-budget=" in message
    assert [rec["kind"] for rec in lines(path)].count("alert") == 1
    assert ledger.totals().alerted


def test_alert_is_written_even_when_warnings_are_errors(path: Path) -> None:
    ledger = Ledger(path, 0.001)
    r = ledger.reserve(1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetAlert)
        with pytest.raises(BudgetAlert):
            ledger.settle(r, 1_000)
    t = ledger.totals()
    assert t.spent_micro == 1_000 and t.alerted


def test_lines_are_self_describing_json(path: Path) -> None:
    ledger = Ledger(path, 1)
    ledger.cancel(ledger.reserve(50, label="x"))
    ledger.settle(ledger.reserve(50), 20)
    ledger.reserve(10**9)
    records = lines(path)
    assert [rec["kind"] for rec in records] == ["reserve", "cancel", "reserve", "settle", "refuse"]
    for rec in records:
        assert rec["v"] == 1 and rec["pid"] == os.getpid()
        assert isinstance(rec["time"], float) and isinstance(rec["micro"], int)
    assert records[0]["id"] == records[1]["id"] and records[0]["label"] == "x"


def test_torn_line_from_a_dead_writer_is_skipped(path: Path) -> None:
    ledger = Ledger(path, 1)
    ledger.settle(ledger.reserve(100), 100)
    with open(path, "a") as handle:
        handle.write('{"v":1,"kind":"settle","id":"x","mi')  # killed mid-write
    fresh = Ledger(path, 1)
    fresh.settle(fresh.reserve(50), 50)
    assert fresh.totals().spent_micro == 150
    assert ledger.totals().spent_micro == 150
    # the torn line was terminated, so the lines written after it stay whole
    raw = path.read_text().split("\n")
    assert raw[2] == '{"v":1,"kind":"settle","id":"x","mi' and raw[-1] == ""
    assert [json.loads(line)["kind"] for line in raw[3:-1]] == ["reserve", "settle"]


def test_instances_share_the_file(path: Path) -> None:
    a, b = Ledger(path, 0.001), Ledger(path, 0.001)
    r = a.reserve(800)
    assert b.reserve(300) is None
    assert b.totals().reserved_micro == 800
    b.settle(r, 800)  # any process may settle a reservation it was handed
    assert a.totals().spent_micro == 800
    path.unlink()  # a new run starts a new ledger
    assert a.totals().spent_micro == 0 and a.reserve(1_000) is not None


def test_amounts(path: Path) -> None:
    assert usd_to_micro(25) == 25_000_000
    assert usd_to_micro(0.1) == 100_000  # not 100000.00000000001
    assert usd_to_micro("0.0000019") == 1  # rounded down: never more than allowed
    assert format_usd(1_234_567) == "$1.234567"
    assert format_usd(25_000_000) == "$25.00"
    assert format_usd(12_345_678_900_000) == "$12,345,678.90"
    assert format_usd(950) == "$0.00095"
    assert format_usd(0) == "$0.00"
    for bad in (-1, "nan", "inf", "ten"):
        with pytest.raises(ValueError):
            Ledger(path, bad)
    ledger = Ledger(path, 1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            ledger.reserve(bad)


def test_budget_exhausted_error(path: Path) -> None:
    ledger = Ledger(path, 0.001)
    ledger.reserve(900)
    assert ledger.reserve(200) is None
    error = ledger.exhausted(200)
    assert isinstance(error, BudgetExhausted) and isinstance(error, MulmError)
    assert (error.needed_micro, error.remaining_micro, error.budget_micro) == (200, 100, 1_000)
    assert "--mulm-budget" in str(error)
    assert "up to $0.0002, $0.0001 of $0.001 remain" in str(error)


WORKER = textwrap.dedent(
    """
    import json, random, sys, warnings
    from pytest_mulm.llm.ledger import BudgetAlert, Ledger

    path, budget, seed, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    ledger = Ledger(path, budget)
    report = dict(charged=0, settles=0, cancels=0, refused=0, alerts=0, max_seen=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(cycles):
            maximum = rng.randint(1_000, 5_000)
            report["max_seen"] = max(report["max_seen"], maximum)
            r = ledger.reserve(maximum, label=f"worker {seed} call {i}")
            if r is None:
                report["refused"] += 1
                continue
            if rng.random() < 0.1:
                ledger.cancel(r)  # the call failed: it costs nothing
                report["cancels"] += 1
                continue
            actual = rng.randint(0, maximum)
            if ledger.settle(r, actual) is not None:
                report["alerts"] += 1
            report["charged"] += actual
            report["settles"] += 1
    report["warnings"] = sum(issubclass(w.category, BudgetAlert) for w in caught)
    print(json.dumps(report))
    """
)


def test_eight_processes_lose_no_charge_and_never_overspend(path: Path) -> None:
    budget_usd, cycles, workers = "1.0", 150, 8
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), budget_usd, str(seed), str(cycles)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for seed in range(workers)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    totals = Ledger(path, budget_usd).totals()
    # no charge lost: the ledger holds exactly what the processes were charged
    assert totals.spent_micro == sum(r["charged"] for r in reports)
    assert totals.calls == sum(r["settles"] for r in reports)
    assert totals.cancelled == sum(r["cancels"] for r in reports)
    assert totals.refused == sum(r["refused"] for r in reports)
    assert totals.reserved_micro == 0
    # the hard stop was reached, and spend never passed the budget
    assert totals.refused > 0
    assert totals.spent_micro <= totals.budget_micro == usd_to_micro(budget_usd)
    # one alert across all processes
    assert sum(r["alerts"] for r in reports) == 1 == sum(r["warnings"] for r in reports)
    records = lines(path)
    assert [rec["kind"] for rec in records].count("alert") == 1
    assert len({rec["pid"] for rec in records}) == workers
    # replaying the file line by line, committed money never exceeded the budget
    committed, open_ = 0, {}
    for rec in records:
        if rec["kind"] == "reserve":
            open_[rec["id"]] = rec["micro"]
            committed += rec["micro"]
        elif rec["kind"] in ("settle", "cancel"):
            committed += rec["micro"] - open_.pop(rec["id"])
        assert committed <= totals.budget_micro
