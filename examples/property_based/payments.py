"""A small service that embeds taskengine: payments charged by a background task.

``PaymentService.pay`` records the request and creates a ``charge`` task; the ``charge``
handler books the amount on the account's ledger.  taskengine runs an attempt at least once:
a worker that dies after booking but before returning is retried, so the handler must be
idempotent.  It is, unless the bug is planted (``TASKENGINE_EXAMPLE_BUG=1``), in which case it
skips the "already booked?" check, and a retry after a crash charges twice.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import taskengine
from taskengine import testing


class Ledger:
    """The bookings of every account (in memory: the handlers run inline in the tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bookings: dict[str, tuple[str, int]] = {}  # payment id -> (account, cents)
        self.entries: list[tuple[str, str, int]] = []  # every booking written, duplicates too
        #: Payment ids whose worker "loses power" right after booking (fault injection).
        self.crash_after_booking: set[str] = set()

    def has(self, payment_id: str) -> bool:
        with self._lock:
            return payment_id in self.bookings

    def book(self, payment_id: str, account: str, cents: int) -> None:
        with self._lock:
            self.bookings[payment_id] = (account, cents)
            self.entries.append((payment_id, account, cents))

    def balance(self, account: str) -> int:
        with self._lock:
            return sum(cents for _, acc, cents in self.entries if acc == account)


#: The ledger the handler writes to (one per process; tests replace it).
LEDGER = Ledger()


def charge(payload: dict[str, Any]) -> str:
    """Book one payment on its account, exactly once."""
    payment_id = payload["payment_id"]
    planted_bug = os.environ.get("TASKENGINE_EXAMPLE_BUG") == "1"
    if not planted_bug and LEDGER.has(payment_id):
        return "already booked"  # a retry after a crash: the booking exists
    LEDGER.book(payment_id, payload["account"], payload["cents"])
    if payment_id in LEDGER.crash_after_booking:
        LEDGER.crash_after_booking.discard(payment_id)  # the power comes back
        testing.crash_worker()
    return "booked"


class PaymentService:
    """The application code under test: it only talks to the engine."""

    def __init__(self, engine: taskengine.TaskEngine) -> None:
        self._engine = engine
        self._count = 0
        engine.register_handler("charge", __name__, "charge")

    def pay(self, account: str, cents: int) -> str:
        """Request a payment; returns the task id that charges it."""
        if cents <= 0:
            raise ValueError("a payment is a positive amount of cents")
        self._count += 1
        payload = {"payment_id": f"p{self._count}", "account": account, "cents": cents}
        return self._engine.create("charge", payload, retry_count=3, retry_interval=30)
