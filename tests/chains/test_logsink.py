"""The log sink: run lines indexed in missiondb and published as events; others left out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats

from gateway.infrastructure import ensure_stream, stream_configs
from gateway.logsink import LogSink, run_fields
from gateway.settings import GatewaySettings
from storage import missiondb
from storage.db.engine import make_engine, transaction, upgrade_to_head


def test_run_fields_from_the_record_or_the_call_id() -> None:
    assert run_fields({"run_id": "r-1", "task_id": "r-1.detect"}) == ("r-1", "r-1.detect")
    assert run_fields({"call_id": "r-20260101t000000-abcdef_detect_2"}) == (
        "r-20260101t000000-abcdef",
        "r-20260101t000000-abcdef.detect",
    )
    assert run_fields({"call_id": "topic-MXT_CALLS-7-orchestrator-advance"}) == (None, None)


def test_run_lines_are_indexed_and_published(database_url: str, nats_server: Any) -> None:
    upgrade_to_head(database_url)
    run_id = "r-20260101t000000-abcdef"

    async def scenario() -> list[dict[str, Any]]:
        nc = await nats.connect(nats_server.url)
        # the events stream, as the gateway declares it when it starts
        events_stream = next(c for c in stream_configs(GatewaySettings()) if c.name == "MXT_EVENTS")
        await ensure_stream(nc.jetstream(), events_stream)
        events: list[dict[str, Any]] = []

        async def keep(msg: Any) -> None:
            events.append(json.loads(msg.data))

        await nc.subscribe(f"mxt.events.log.{run_id}", cb=keep)
        sink = LogSink(database_url, nats_server.url)
        sink.put("brick-detect", {
            "time": "2026-01-01T00:00:01.000Z", "level": "warning", "message": "faint source",
            "call_id": f"{run_id}_detect_1", "function": "brick-detect",
        })  # fmt: skip
        sink.put("brick-detect", {"level": "error", "message": "boom", "traceback": "Trace\n",
                                  "run_id": run_id, "task_id": f"{run_id}.detect"})  # fmt: skip
        sink.put("echo", {"level": "info", "message": "not a run's line"})
        await asyncio.to_thread(sink.flush, 20)
        await asyncio.sleep(0.5)
        await nc.drain()
        return events

    events = asyncio.run(scenario())
    engine = make_engine(database_url)
    with transaction(engine) as db:
        page = missiondb.query(db, missiondb.QueryRequest(entity="logs", filters={}))
    engine.dispose()
    lines = page.items
    assert [(x["level"], x["task_id"], x["function"]) for x in lines] == [
        ("WARNING", f"{run_id}.detect", "brick-detect"),
        ("ERROR", f"{run_id}.detect", "brick-detect"),
    ]
    assert lines[1]["message"] == "boom\nTrace\n"
    assert sorted(e["message"] for e in events) == ["boom\nTrace\n", "faint source"]
    assert all(e["kind"] == "log" and e["run_id"] == run_id for e in events)
