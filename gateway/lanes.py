"""Lanes of the async queue: ToO work never waits behind anything else.

A durable async call is queued on ``mxt.async.<lane>.<function>`` and run by the
queue worker from that lane's own durable consumer (``mxt-queue-worker-<lane>``)
with that lane's own slots (``MXT_LANE_SLOTS``); within a lane no function takes
more than ``MXT_FUNCTION_SLOTS`` of them. The lanes, first to last:

``too``
    brick calls of ToO runs (the orchestrator sets ``X-Mxt-Priority: too``).
``events``
    topic deliveries queued by the connector (``X-Topic``): raw arrivals start runs.
``platform``
    the platform's other brick calls (``X-Mxt-Run-Id``: CP and GP runs).
``public``
    every call through the public ``/async-function`` API, whatever its headers
    (such a call carries ``X-Mxt-User``: a redriven or older one stays here too).

``X-Mxt-*`` headers come only from the platform (the gateway drops them from other
callers), and a public caller's call goes to ``public`` whatever it sends.

Calls queued before lanes existed, on ``mxt.async.<function>``, are still run: the
old durable consumer ``mxt-queue-worker`` is kept, filtered to ``mxt.async.*``, and
its calls run in the lane their headers name.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway import messages as m

LANES = ("too", "events", "platform", "public")
PRIORITY_HEADER = "X-Mxt-Priority"
#: the consumer of calls queued before lanes (``mxt.async.<function>``, three tokens)
LEGACY_FILTER = "mxt.async.*"
#: slots of each lane unless ``MXT_LANE_SLOTS`` says otherwise (``None``: worker_concurrency)
DEFAULT_SLOTS: dict[str, int | None] = {"too": 16, "events": 16, "platform": None, "public": None}


def lane_of(headers: Mapping[str, str]) -> str:
    """The lane a platform-queued call belongs to, from its headers."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "x-mxt-user" in lower:  # a user's call (gateway.api): public, whatever else it says
        return "public"
    if lower.get(PRIORITY_HEADER.lower(), "").strip().lower() == "too":
        return "too"
    if "x-topic" in lower:
        return "events"
    if "x-mxt-run-id" in lower:
        return "platform"
    return "public"


def lane_subject(lane: str, function: str) -> str:
    """Subject of a function's durable async calls in ``lane``."""
    return f"mxt.async.{lane}.{function}"


def lane_filter(lane: str) -> str:
    """The filter subject of a lane's consumer."""
    return f"mxt.async.{lane}.>"


def lane_durable(lane: str) -> str:
    """The durable consumer name of a lane."""
    return f"{m.WORKER_DURABLE}-{lane}"


def function_of(subject: str) -> str:
    """The function a call's subject names (lane subject or one from before lanes)."""
    parts = subject.split(".", 3)
    if len(parts) == 4 and parts[2] in LANES:
        return parts[3]
    return subject.split(".", 2)[-1]


def parse_slots(text: str, worker_concurrency: int) -> dict[str, int]:
    """Slots per lane: ``MXT_LANE_SLOTS`` (``"too=16,public=8"``) over the defaults.

    Raises
    ------
    ValueError
        An unknown lane or a count below 1.
    """
    slots = {lane: n or worker_concurrency for lane, n in DEFAULT_SLOTS.items()}
    for item in filter(None, (p.strip() for p in text.split(","))):
        lane, _, count = item.partition("=")
        lane = lane.strip()
        if lane not in slots:
            raise ValueError(f"MXT_LANE_SLOTS: unknown lane {lane!r}; lanes: {', '.join(LANES)}")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"MXT_LANE_SLOTS: {item!r} needs a count of at least 1")
        slots[lane] = int(count)
    return slots


def function_slots(lane_slots: int, setting: int) -> int:
    """Calls of one function a lane runs at once: the setting, or half the lane (≥ 1)."""
    if setting > 0:
        return min(setting, lane_slots)
    return max(1, lane_slots // 2)
