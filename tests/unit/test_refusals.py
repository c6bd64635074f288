import logging

import pytest

from appliance.web.refusals import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("test.refusals"), burst=5, interval_s=1.0,
                          clock=clock)
    with caplog.at_level(logging.WARNING):
        logged = sum(refusals.warning("signature", "refused %d", i) for i in range(1000))
        assert logged == 5  # the burst, then silence while the flood lasts
        assert refusals.warning("host", "another kind")  # each kind has its own budget
        clock.now += 1.0
        assert refusals.warning("signature", "refused again")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7
    assert lines[-1] == "refused again (and 995 more signature refusal(s) not logged)"
