"""Dead letters on ``MXT_DLQ``: list them, redrive one (re-enqueue with attempts reset).

A redriven letter is deleted from the stream, so the list shows only calls that
still need a person's attention.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bricks.errors import NotFound
from gateway import messages as m
from gateway.calls import CallStore, enqueue


async def list_dead_letters(
    js: JetStreamContext, limit: int = 100
) -> list[tuple[int, m.DeadLetter]]:
    """The newest ``limit`` dead letters with their stream sequence, oldest first."""
    try:
        info = await js.stream_info(m.DLQ_STREAM)
    except NotFoundError:
        return []
    letters: list[tuple[int, m.DeadLetter]] = []
    seq = info.state.last_seq
    while seq >= info.state.first_seq and len(letters) < limit and seq > 0:
        try:
            raw = await js.get_msg(m.DLQ_STREAM, seq)
        except NotFoundError:  # deleted by a redrive
            seq -= 1
            continue
        letters.append((seq, m.DeadLetter.model_validate_json(raw.data)))
        seq -= 1
    return letters[::-1]


async def redrive(js: JetStreamContext, calls: CallStore, call_id: str) -> m.AsyncCall:
    """Re-enqueue the dead-lettered call ``call_id`` with its attempts reset.

    Raises
    ------
    NotFound
        No dead letter has that call id.
    """
    for seq, letter in await list_dead_letters(js, limit=100_000):
        if letter.call.call_id != call_id:
            continue
        call = letter.call.model_copy(update={"redrives": letter.call.redrives + 1})
        # a fresh message id, or JetStream's dedupe window would swallow the redrive
        await enqueue(js, calls, call, msg_id=f"{call_id}:redrive:{call.redrives}")
        await js.delete_msg(m.DLQ_STREAM, seq)
        return call
    raise NotFound(f"no dead letter with call id {call_id!r}", call_id=call_id)
