"""The one circuit breaker rule, forward (check's tests as they end) and backward (the sensors' run history)."""

import pytest

from comfy_pipeline.batch.breaker import THRESHOLD, Breaker


def test_opens_after_threshold_consecutive_failures_and_a_success_closes_it():
    breaker = Breaker()
    for key in ("a", "b"):
        breaker = breaker.after(key, success=False)
    assert not breaker.open
    assert breaker.after("c", success=True).failures == ()
    breaker = breaker.after("c", success=False)
    assert breaker.open and breaker.failures == ("a", "b", "c") and THRESHOLD == 3


def test_one_attempt_counts_once_however_often_it_fails():
    breaker = Breaker().after("a", success=False).after("a", success=False).after("b", success=False)
    assert breaker.failures == ("a", "b") and not breaker.open


def test_from_history_reads_back_to_the_last_success_and_agrees_with_going_forward():
    history = [("e", False), ("d", False), ("d", False), ("c", False), ("b", True), ("a", False)]  # newest first
    backward = Breaker.from_history(history)
    forward = Breaker()
    for key, success in reversed(history):
        forward = forward.after(key, success=success)
    assert backward.failures == forward.failures == ("c", "d", "e") and backward.open
    assert not Breaker.from_history([("x", False), ("y", True), ("z", False), ("w", False)]).open


def test_a_threshold_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Breaker(threshold=0)
