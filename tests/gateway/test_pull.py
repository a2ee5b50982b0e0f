"""The pull helper on a real nats-server: one message while idle, the backlog in batches
of at most the limit while busy, an empty list (not an exception) when nothing comes."""

from __future__ import annotations

from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig

from gateway.pull import Puller


async def test_puller_takes_one_when_idle_then_drains_the_backlog(nats_server: Any) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await js.add_stream(name="PULLTEST", subjects=["pulltest.>"])
        await js.add_consumer(
            "PULLTEST", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT)
        )
        puller = Puller(await js.pull_subscribe_bind("d", stream="PULLTEST"))
        assert await puller.fetch(10, timeout=0.2) == [] and not puller.busy
        for n in range(7):
            await js.publish("pulltest.x", str(n).encode())
        first = await puller.fetch(10, timeout=5)
        assert [m.data for m in first] == [b"0"] and puller.busy
        # then the backlog, in batches of at most the limit (a short drain may bring
        # fewer), in order, each message once
        rest: list = []
        while len(rest) < 6:
            batch = await puller.fetch(4, timeout=5)
            assert len(batch) <= 4
            rest += batch
        assert [m.data for m in rest] == [str(n).encode() for n in range(1, 7)]
        for msg in first + rest:
            await msg.ack()
        assert await puller.fetch(10, timeout=5) == [] and not puller.busy
    finally:
        await js.delete_stream("PULLTEST")
        await nc.close()
