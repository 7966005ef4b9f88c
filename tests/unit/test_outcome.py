"""What one answer (or failure) of the broker API means: pure, no network."""

import httpx
import pytest

from services.order_queue.outcome import Outcome, classify_exception, classify_response


def answer(status, body):
    return (
        httpx.Response(status, json=body)
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )


@pytest.mark.parametrize(
    "status, body, outcome",
    [
        (200, {"status": "success", "orderid": "7"}, Outcome.ACCEPTED),
        (200, {"status": "error", "message": "RMS"}, Outcome.REJECTED),
        (200, "<html>gateway</html>", Outcome.UNKNOWN),
        (400, {"status": "error"}, Outcome.REJECTED),
        (401, {}, Outcome.CREDENTIALS),
        (403, {}, Outcome.CREDENTIALS),
        (408, {}, Outcome.TRANSIENT),
        (429, {}, Outcome.THROTTLED),  # the API's limiter: nothing ran
        (500, {"status": "error"}, Outcome.UNKNOWN),  # may have booked before it failed
        (503, "busy", Outcome.UNKNOWN),
        # Answers that lie, from a proxy or tunnel in front of OpenAlgo:
        (502, "<html>Bad Gateway</html>", Outcome.UNKNOWN),  # the upstream may have placed it
        (504, "<html>Gateway Timeout</html>", Outcome.UNKNOWN),
        (200, "<!doctype html><title>Tunnel</title>", Outcome.UNKNOWN),  # not OpenAlgo's answer
        (200, {"status": "error"}, Outcome.REJECTED),  # the API said it placed nothing
        (200, {"status": "success"}, Outcome.ACCEPTED),  # placed; the id is just not given
    ],
)
def test_answers(status, body, outcome):
    verdict = classify_response(answer(status, body))
    assert verdict.outcome is outcome and verdict.http_status == status


def test_a_request_that_never_left_is_not_sent_and_one_that_left_is_unknown():
    assert classify_exception(httpx.ConnectError("refused")).outcome is Outcome.NOT_SENT
    assert classify_exception(httpx.ReadTimeout("slow")).outcome is Outcome.UNKNOWN
    # The connection reset after the request was written: it may have been placed.
    assert classify_exception(httpx.RemoteProtocolError("peer closed")).outcome is Outcome.UNKNOWN
    assert classify_exception(httpx.ReadError("reset by peer")).outcome is Outcome.UNKNOWN


def test_a_throttled_answer_says_how_long_to_wait_within_a_cap():
    def throttled(retry_after):
        return classify_response(
            httpx.Response(429, headers={"Retry-After": retry_after}, text="10 per 1 second")
        )

    assert throttled("2").retry_after == 2.0
    assert throttled("3600").retry_after == 30.0
    assert throttled("Wed, 21 Oct 2026 07:28:00 GMT").retry_after is None
