"""The property-based example of docs/howto/testing.md runs, and catches its planted bug."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "property_based" / "test_payments.py"


def test_example_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKENGINE_EXAMPLE_BUG", raising=False)
    result = pytester.runpytest_subprocess(str(EXAMPLE), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)


def test_example_finds_the_planted_bug(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKENGINE_EXAMPLE_BUG", "1")
    result = pytester.runpytest_subprocess(str(EXAMPLE), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=1)
    # hypothesis shrinks to the smallest case: one payment whose worker died after booking.
    result.stdout.re_match_lines(
        [
            r"E +AssertionError: \w+ charged wrongly",
            r"E +assert 2 == 1",
            r"E +Failing test case: test_every_payment_is_charged_exactly_once\(",
            r"E +requests=\[\('\w+', 1\)\],",
            r"E +Draw 1 \(crashing payments\): \{1\}",
        ]
    )
