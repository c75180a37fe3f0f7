"""Property-based test of the payment service, with crashes injected: every payment is
charged exactly once, whichever workers die.

Run it: ``pytest examples/property_based``.  Plant the bug and watch hypothesis find it:
``TASKENGINE_EXAMPLE_BUG=1 pytest examples/property_based``.
"""

from __future__ import annotations

import payments
from hypothesis import given, settings
from hypothesis import strategies as st

import taskengine
from taskengine import testing

ACCOUNTS = st.sampled_from(["alice", "bob", "carol"])
PAYMENTS = st.lists(st.tuples(ACCOUNTS, st.integers(1, 10_000)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(requests=PAYMENTS, data=st.data())
def test_every_payment_is_charged_exactly_once(
    requests: list[tuple[str, int]], data: st.DataObject
) -> None:
    payments.LEDGER = payments.Ledger()
    clock = testing.FakeClock()
    engine = taskengine.TaskEngine(taskengine.MemoryStore(), execution="inline", clock=clock)
    try:
        service = payments.PaymentService(engine)
        task_ids = [service.pay(account, cents) for account, cents in requests]
        # Some workers die right after booking, before they can report success.
        crashing = data.draw(st.sets(st.integers(1, len(requests))), label="crashing payments")
        payments.LEDGER.crash_after_booking = {f"p{n}" for n in crashing}

        engine.run_until_idle()
        clock.advance(30)  # the retry interval, without sleeping
        finals = testing.wait_all(engine, task_ids, timeout=0)

        assert all(task.status is taskengine.TaskStatus.SUCCESS for task in finals)
        for account in {account for account, _ in requests}:
            expected = sum(cents for acc, cents in requests if acc == account)
            assert payments.LEDGER.balance(account) == expected, f"{account} charged wrongly"
    finally:
        engine.stop()
