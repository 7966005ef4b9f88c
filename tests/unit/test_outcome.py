"""What one answer (or failure) of the broker API means: pure, no network."""

import httpx
import pytest

from services.order_queue.outcome import Outcome, classify_exception, classify_response


def answer(status, body):
    return httpx.Response(status, json=body) if isinstance(body, dict) else \
        httpx.Response(status, text=body)


@pytest.mark.parametrize("status, body, outcome", [
    (200, {"status": "success", "orderid": "7"}, Outcome.ACCEPTED),
    (200, {"status": "error", "message": "RMS"}, Outcome.REJECTED),
    (200, "<html>gateway</html>", Outcome.UNKNOWN),
    (400, {"status": "error"}, Outcome.REJECTED),
    (401, {}, Outcome.CREDENTIALS),
    (403, {}, Outcome.CREDENTIALS),
    (408, {}, Outcome.TRANSIENT),
    (429, {}, Outcome.TRANSIENT),
    (500, {"status": "error"}, Outcome.UNKNOWN),  # may have booked before it failed
    (503, "busy", Outcome.UNKNOWN),
])
def test_answers(status, body, outcome):
    verdict = classify_response(answer(status, body))
    assert verdict.outcome is outcome and verdict.http_status == status


def test_a_request_that_never_left_is_not_sent_and_one_that_left_is_unknown():
    assert classify_exception(httpx.ConnectError("refused")).outcome is Outcome.NOT_SENT
    assert classify_exception(httpx.ReadTimeout("slow")).outcome is Outcome.UNKNOWN
