"""The LLM budget ledger shared by every xdist worker and process (design.md §7).

Why a ledger: a JSON total updated read-modify-write by 8 processes lost 99 % of its
charges (pitfalls.md). Here every change is one appended JSON line, written while holding
a ``filelock.FileLock``, and the totals are the sum of the lines. Amounts are integer
micro-dollars, so sums are exact.

A call first *reserves* its maximum cost; the reservation is refused when spent +
outstanding reservations + this maximum would pass the budget, and then nothing is sent
(hard stop). After the call it is *settled* with the actual cost, or *cancelled* when the
call failed. Since what is settled never exceeds what was reserved, spend never exceeds
the budget. The settle that first takes spend to 95 % of the budget writes an ``alert``
line, so the alert fires once across all processes.

Line kinds (every line also has ``v``, ``kind``, ``pid`` and ``time``):

- ``reserve``: ``id``, ``micro`` (the maximum), ``label``
- ``settle``: ``id``, ``micro`` (charged), ``reserved``, and ``clamped_from`` when the
  actual cost was higher than the reservation
- ``cancel``: ``id``, ``micro`` 0
- ``refuse``: ``micro`` (the maximum that did not fit), ``label``
- ``alert``: ``micro`` (spent), ``budget_micro``

A process that dies between reserve and settle leaves its reservation outstanding; use
one ledger file per run so that cannot carry over.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import filelock

from ..errors import MulmError

__all__ = [
    "ALERT_PERCENT",
    "BudgetAlert",
    "BudgetExhausted",
    "Ledger",
    "LedgerError",
    "LedgerTotals",
    "Reservation",
    "format_usd",
    "usd_to_micro",
]

ALERT_PERCENT = 95
_VERSION = 1


class BudgetAlert(UserWarning):
    """Spend has reached ``ALERT_PERCENT`` % of the LLM budget (emitted once per ledger)."""


class LedgerError(MulmError):
    """The ledger was misused (unknown or closed reservation) or could not be locked."""


class BudgetExhausted(MulmError):
    """A call's maximum cost does not fit in what is left of the LLM budget."""

    def __init__(self, needed_micro: int, remaining_micro: int, budget_micro: int):
        self.needed_micro = needed_micro
        self.remaining_micro = remaining_micro
        self.budget_micro = budget_micro
        super().__init__(
            f"LLM budget exhausted: this call may cost up to {format_usd(needed_micro)}, "
            f"{format_usd(remaining_micro)} of {format_usd(budget_micro)} remain; raise "
            f"--mulm-budget or use the recorded cassettes (replay mode)"
        )


def usd_to_micro(usd: float | str | Decimal) -> int:
    """Whole micro-dollars in ``usd`` (rounded down: never more than the user allowed)."""
    try:
        amount = Decimal(str(usd))
    except InvalidOperation:
        raise ValueError(f"not an amount of USD: {usd!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"a budget must be a finite amount >= 0 USD, got {usd!r}")
    return math.floor(amount * 1_000_000)


def format_usd(micro: int) -> str:
    """Exact dollars for display: ``$25.00``, ``$1.234567``, ``$0.00095``."""
    text = f"{Decimal(micro).scaleb(-6):,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@dataclass(frozen=True)
class Reservation:
    """The right to spend up to ``micro`` on one call; settle or cancel it exactly once."""

    id: str
    micro: int
    label: str = ""


@dataclass(frozen=True)
class LedgerTotals:
    """The ledger summed over every process. ``fraction`` is spent / budget (1.0 when the
    budget is 0: nothing can be spent). ``overrun_micro`` is what calls cost beyond their
    reservation and was therefore not charged (a sign the maximum was underestimated)."""

    spent_micro: int
    reserved_micro: int
    calls: int
    budget_micro: int
    remaining_micro: int
    fraction: float
    refused: int = 0
    cancelled: int = 0
    overrun_micro: int = 0
    alerted: bool = False


@dataclass
class _State:
    spent: int = 0
    calls: int = 0
    refused: int = 0
    cancelled: int = 0
    overrun: int = 0
    alerted: bool = False
    unreadable: int = 0
    open: dict[str, int] = field(default_factory=dict)

    def apply(self, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind == "reserve":
            self.open[rec["id"]] = int(rec["micro"])
        elif kind == "settle":
            self.open.pop(rec["id"], None)
            self.spent += int(rec["micro"])
            self.calls += 1
            if "clamped_from" in rec:
                self.overrun += int(rec["clamped_from"]) - int(rec["micro"])
        elif kind == "cancel":
            self.open.pop(rec["id"], None)
            self.cancelled += 1
        elif kind == "refuse":
            self.refused += 1
        elif kind == "alert":
            self.alerted = True


def _check_micro(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int of micro-dollars, got {value!r}")


class Ledger:
    """An append-only budget ledger at ``path``, safe across threads and processes.

    Every process must open it with the same ``budget_usd``.
    """

    def __init__(self, path: Path | str, budget_usd: float | str | Decimal, *, lock_timeout: float = 60.0):
        self.path = Path(path)
        self.budget_micro = usd_to_micro(budget_usd)
        self._lock = filelock.FileLock(f"{self.path}.lock", timeout=lock_timeout)
        self._mutex = threading.Lock()  # the cached state below is per instance
        self._state = _State()
        self._offset = 0
        self._file_id: tuple[int, int] | None = None
        self._torn = False

    # -- reading and writing, only while locked --------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[_State]:
        with self._mutex:
            try:
                self._lock.acquire()
            except filelock.Timeout:
                raise LedgerError(
                    f"could not lock the LLM budget ledger {self.path} within "
                    f"{self._lock.timeout} s; is another run stuck?"
                ) from None
            try:
                self._sync()
                yield self._state
            finally:
                self._lock.release()

    def _sync(self) -> None:
        """Apply the lines appended since we last looked (the file only grows)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._reset(None)
            return
        file_id = (stat.st_dev, stat.st_ino)
        if file_id != self._file_id or stat.st_size < self._offset:
            self._reset(file_id)  # the file was replaced or truncated: start over
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        *lines, tail = data.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._state.apply(record)
            except (ValueError, KeyError, TypeError):
                # a line torn by a process killed mid-write: its charge is lost with it
                self._state.unreadable += 1
        self._offset += len(data) - len(tail)
        # we hold the lock, so an unterminated tail can only be left by a dead writer
        self._torn = bool(tail)

    def _reset(self, file_id: tuple[int, int] | None) -> None:
        self._state = _State()
        self._offset = 0
        self._file_id = file_id
        self._torn = False

    def _append(self, kind: str, **fields: Any) -> None:
        record = {"v": _VERSION, "kind": kind, "pid": os.getpid(),
                  "time": round(time.time(), 3), **fields}
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        if self._torn:
            line = "\n" + line  # end the torn line so ours stays readable
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one write() of a whole line in append mode, under the lock
        with open(self.path, "ab") as handle:
            handle.write(line.encode("utf-8"))
        self._sync()

    # -- the API ---------------------------------------------------------------------------

    def reserve(self, max_micro: int, label: str = "") -> Reservation | None:
        """Reserve a call's maximum cost, or return None when it does not fit (send nothing)."""
        _check_micro("max_micro", max_micro)
        with self._locked() as state:
            committed = state.spent + sum(state.open.values())
            if self.budget_micro == 0 or committed + max_micro > self.budget_micro:
                self._append("refuse", micro=max_micro, label=label)
                return None
            reservation = Reservation(uuid.uuid4().hex, max_micro, label)
            self._append("reserve", id=reservation.id, micro=max_micro, label=label)
            return reservation

    def settle(self, reservation: Reservation, actual_micro: int) -> str | None:
        """Charge the actual cost of a reserved call.

        Returns the budget alert message (also emitted as a ``BudgetAlert`` warning) when
        this settle is the first to reach ``ALERT_PERCENT`` % of the budget, else None.
        """
        _check_micro("actual_micro", actual_micro)
        message = None
        with self._locked() as state:
            reserved = self._open_amount(state, reservation)
            fields: dict[str, Any] = {"id": reservation.id, "micro": actual_micro, "reserved": reserved}
            if actual_micro > reserved:
                # Charging more than the reservation would let the ledger pass the budget
                # behind the backs of processes that reserved against it, so the charge is
                # capped at what was admitted; the real figure is kept in the line and in
                # LedgerTotals.overrun_micro, because it means the maximum was wrong.
                fields.update(micro=reserved, clamped_from=actual_micro)
            self._append("settle", **fields)
            after = self._state  # _append re-read the file, our settle included
            if not after.alerted and after.spent * 100 >= self.budget_micro * ALERT_PERCENT:
                self._append("alert", micro=after.spent, budget_micro=self.budget_micro)
                message = self._alert_message(after.spent)
        if message is not None:
            # outside the lock: with warnings as errors this raises, and the ledger is
            # already consistent
            warnings.warn(message, BudgetAlert, stacklevel=2)
        return message

    def cancel(self, reservation: Reservation) -> None:
        """Release a reservation whose call failed or was served from a cassette."""
        with self._locked() as state:
            self._open_amount(state, reservation)
            self._append("cancel", id=reservation.id, micro=0)

    def totals(self) -> LedgerTotals:
        """The ledger summed over every process so far."""
        with self._locked() as state:
            reserved = sum(state.open.values())
            budget = self.budget_micro
            return LedgerTotals(
                spent_micro=state.spent,
                reserved_micro=reserved,
                calls=state.calls,
                budget_micro=budget,
                remaining_micro=max(budget - state.spent - reserved, 0),
                fraction=state.spent / budget if budget else 1.0,
                refused=state.refused,
                cancelled=state.cancelled,
                overrun_micro=state.overrun,
                alerted=state.alerted,
            )

    def exhausted(self, needed_micro: int) -> BudgetExhausted:
        """The error to raise (or report) for a call whose reservation was refused."""
        totals = self.totals()
        return BudgetExhausted(needed_micro, totals.remaining_micro, totals.budget_micro)

    # -- helpers ---------------------------------------------------------------------------

    def _open_amount(self, state: _State, reservation: Reservation) -> int:
        try:
            return state.open[reservation.id]
        except KeyError:
            raise LedgerError(
                f"reservation {reservation.id} ({reservation.label or 'no label'}) is not "
                f"open in {self.path}: already settled or cancelled, or from another ledger"
            ) from None

    def _alert_message(self, spent: int) -> str:
        doubled = Decimal(max(self.budget_micro * 2, 1_000_000)).scaleb(-6).normalize()
        suggestion = format(doubled, "f")
        return (
            f"LLM spend reached {ALERT_PERCENT} % of the budget: {format_usd(spent)} of "
            f"{format_usd(self.budget_micro)}; calls stop at 100 %. Raise it with "
            f"--mulm-budget=<USD> (e.g. --mulm-budget={suggestion})"
        )
