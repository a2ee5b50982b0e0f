"""Enqueueing durable async calls and reading their status.

Shared by the gateway (``/async-function``), the topic connector and the dead-letter
redrive, so that every way into the queue dedupes and records status the same way.
"""

from __future__ import annotations

import contextlib
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway import messages as m
from gateway.lanes import lane_of, lane_subject


class CallStore:
    """The call-status bucket: one :class:`CallStatus` per call id."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, call_id: str) -> m.CallStatus | None:
        """The status of a call, or ``None`` when the id is unknown (or expired)."""
        try:
            entry = await self.kv.get(call_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return m.CallStatus.model_validate_json(entry.value)

    async def create(self, status: m.CallStatus) -> bool:
        """Record the first state of a call; ``False`` when the call id exists already."""
        try:
            await self.kv.create(status.call_id, status.to_bytes())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def put(self, status: m.CallStatus) -> None:
        """Record a new state of a call."""
        status.updated_at = time.time()
        await self.kv.put(status.call_id, status.to_bytes())


async def enqueue(
    js: JetStreamContext,
    store: CallStore,
    call: m.AsyncCall,
    msg_id: str | None = None,
    lane: str | None = None,
) -> bool:
    """Publish an async call on its lane's subject for its function, deduplicated on the
    call id.

    Parameters
    ----------
    msg_id
        The ``Nats-Msg-Id`` (the call id unless a redrive needs a fresh one).
    lane
        The lane (``gateway.lanes``); from the call's headers when omitted.

    Returns
    -------
    bool
        ``True`` when queued now, ``False`` when the call id was seen already.
    """
    queued = m.CallStatus(
        call_id=call.call_id, function=call.function, state="queued", enqueued_at=call.enqueued_at
    )
    # status first (the worker may pick the call up before publish() returns); a
    # first enqueue creates it atomically, so a repeated call id stops here
    if msg_id is None:
        if not await store.create(queued):
            return False
    else:
        await store.put(queued)
    try:
        ack = await js.publish(
            lane_subject(lane or lane_of(call.headers), call.function),
            call.to_bytes(),
            headers={"Nats-Msg-Id": msg_id or call.call_id},
        )
    except Exception:
        # not queued: forget the status, or a retry with this call id would be a "duplicate"
        with contextlib.suppress(Exception):
            await store.kv.delete(call.call_id)
        raise
    return not ack.duplicate
