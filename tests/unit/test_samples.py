"""``store.samples``: depth over time, and the facts the charts are drawn from.  Run
against SQLite and PostgreSQL alike."""

from datetime import timedelta

from tests.support.store_steps import T0, claim, enqueue


def test_one_sample_per_interval_however_many_dispatchers_ask(store):
    enqueue(store)
    enqueue(store, symbol="TCS")
    claim(store)
    assert store.samples.record_sample(now=T0, every_seconds=60)
    assert not store.samples.record_sample(now=T0 + timedelta(seconds=30), every_seconds=60)
    assert store.samples.record_sample(now=T0 + timedelta(seconds=61), every_seconds=60)
    facts = store.samples.chart_facts(since_samples=T0, since_sends=T0, since_latency=T0)
    assert [(s["pending"], s["sending"]) for s in facts["depth"]] == [(1, 1), (1, 1)]
    assert facts["current"]["pending"] == 1 and facts["current"]["sending"] == 1


def test_samples_past_retention_are_dropped(store):
    assert store.samples.record_sample(now=T0, every_seconds=60)
    later = T0 + timedelta(days=3)
    assert store.samples.record_sample(now=later, every_seconds=60)
    facts = store.samples.chart_facts(since_samples=T0, since_sends=later, since_latency=later)
    assert [s["at"] for s in facts["depth"]] == [later]


def test_sends_and_acceptances_come_from_the_trail(store):
    order_id = enqueue(store)
    claimed = claim(store)
    sent = T0 + timedelta(seconds=2)
    store.lifecycle.mark_sent(claimed, now=sent, actor="d1", broker_orderid="9")
    facts = store.samples.chart_facts(since_samples=T0, since_sends=T0, since_latency=T0)
    assert facts["sends"] == [(sent, claimed.lane_key)]
    assert facts["accepted"] == [(sent, store.reads.get_order(order_id)["created_at"])]


def test_the_rate_counts_requests_that_reached_the_broker_when_they_left(store):
    """A request the API's limiter refused (429) or that never left counts against no
    broker limit; one that did counts at the moment it left, not when it was answered."""
    enqueue(store)
    throttled = claim(store)
    assert store.lifecycle.mark_for_retry(
        throttled,
        now=T0,
        actor="d1",
        retry_at=T0,
        outcome="throttled",
        error="HTTP 429: too many requests",
        counts_as_attempt=False,
        http_status=429,
    )
    answered = T0 + timedelta(seconds=3)
    slow = claim(store)
    store.lifecycle.mark_sent(slow, now=answered, actor="d1", broker_orderid="9", latency_ms=2500.0)
    facts = store.samples.chart_facts(since_samples=T0, since_sends=T0, since_latency=T0)
    assert facts["sends"] == [(answered - timedelta(milliseconds=2500), slow.lane_key)]
