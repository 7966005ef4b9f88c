"""Intake: an order enters the queue, committed before the webhook is answered.

Enqueue commits on the driver's own cursor (``backends``): it is the webhook's whole
cost.  An order whose webhook carried an alert key takes the key in the same transaction
(``alert_keys.take_key``), so a resend stores nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from database.order_queue.alert_keys import take_key
from database.order_queue.api_keys import KeySealing
from database.order_queue.core import StoreCore, StorePart
from database.order_queue.model import (
    EXIT_PRIORITY,
    LANE_OF_ENDPOINT,
    LANE_PRIORITY,
    Lane,
    OrderState,
    QueueStorageError,
    alert_keys,
    expiry_for,
    orders,
)
from database.order_queue.values import (
    AlertKey,
    DuplicateAlert,
)


class Intake(StorePart):
    """New orders, each committed durably."""

    def __init__(self, core: StoreCore, sealing: KeySealing):
        super().__init__(core)
        #: Seals each order's API key at enqueue (the runtime's, from the pepper).
        self.sealing = sealing

    def enqueue(
        self,
        endpoint: str,
        payload: dict[str, Any],
        *,
        now: datetime,
        max_age_seconds: float | None,
        deadline: datetime | None = None,
        alert_key: AlertKey | None = None,
    ) -> int:
        """Commit one order as PENDING and return its id.

        With ``alert_key`` (its webhook carried one) the key is taken in the same
        transaction (``alert_keys.take_key``) unless this request took it already
        (``alert_key.key_id``), and the order is linked to it; ``DuplicateAlert`` when a
        copy of the alert took it first (nothing stored).

        The order expires (is never sent) ``max_age_seconds`` after ``now`` or at
        ``deadline`` (e.g. its strategy's squareoff), whichever is first; a deadline
        already past is ignored, so the squareoff's own orders still go out.

        Guarantee: when this returns, the row is durable (committed, fsync'd on SQLite);
        when it raises, nothing was stored.  ``ValueError`` for an endpoint the Strategy
        Manager does not use or a payload without the fields the queue needs.
        """
        lane = LANE_OF_ENDPOINT.get(endpoint)
        if lane is None:
            raise ValueError(
                f"endpoint must be one of {sorted(LANE_OF_ENDPOINT)}, not {endpoint!r}"
            )
        if not isinstance(payload, dict):
            raise ValueError("payload must be a dict")
        api_key = payload.get("apikey")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("payload needs a non-empty 'apikey'")
        for field in ("symbol", "exchange", "action"):
            if not isinstance(payload.get(field), str) or not payload[field]:
                raise ValueError(f"payload needs a non-empty string {field!r}")
        stored_payload = {k: v for k, v in payload.items() if k != "apikey"}
        apikey_token, account = self.sealing.seal_with_account(api_key)
        product = str(payload.get("product") or "")
        row = {
            "endpoint": endpoint,
            "payload": json.dumps(stored_payload, sort_keys=True),
            "apikey_token": apikey_token,
            "account": account,
            "strategy": payload.get("strategy"),
            "symbol": payload["symbol"],
            "exchange": payload["exchange"],
            "product": product,
            "instrument": "|".join((account, payload["exchange"], payload["symbol"], product)),
            "lane": lane.value,
            "lane_key": f"{lane.value}:{account}",
            "lane_priority": EXIT_PRIORITY if _is_exit(lane, payload) else LANE_PRIORITY[lane],
            "created_at": now,
            "state": OrderState.PENDING.value,
            "attempts": 0,
            "reconcile_checks": 0,
            "available_at": now,
            "expires_at": expiry_for(now, max_age_seconds, deadline),
            "updated_at": now,
        }
        self.backend.check_room()
        if alert_key is None:
            with self._storage_errors(writing=True):
                return int(self.backend.insert_order(self.engine, row))
        return self._enqueue_keyed(row, alert_key, now)

    def _enqueue_keyed(self, row: dict[str, Any], alert_key: AlertKey, now: datetime) -> int:
        try:
            with self.transaction() as conn:
                key_id = alert_key.key_id or take_key(conn, alert_key, now)
                inserted = conn.execute(
                    insert(orders).values(**row, alert_key_id=key_id)
                ).inserted_primary_key
                assert inserted is not None  # a single-row insert reports its key
                self.backend.notify(conn)
            alert_key.key_id = key_id
            return int(inserted[0])
        except QueueStorageError as exc:
            if alert_key.key_id is None and isinstance(exc.__cause__, IntegrityError):
                # PostgreSQL: a copy took the key while this transaction ran.
                with self.transaction(read_only=True) as conn:
                    taken = conn.execute(
                        select(alert_keys.c.id, alert_keys.c.body_hash).where(
                            alert_keys.c.scope == alert_key.scope,
                            alert_keys.c.alert_key == alert_key.key,
                        )
                    ).first()
                if taken is not None:
                    raise DuplicateAlert(
                        taken.id, conflict=taken.body_hash != alert_key.body_hash
                    ) from None
            raise


def _is_exit(lane: Lane, payload: dict[str, Any]) -> bool:
    """A smart order whose target position is flat: it reduces or closes a position."""
    if lane is not Lane.SMART:
        return False
    try:
        return int(str(payload.get("position_size", "")).strip()) == 0
    except ValueError:
        return False
