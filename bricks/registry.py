"""Every brick, by name, in pipeline order.

Each ``bricks/<module>.py`` exposes ``BRICK``; modules are imported lazily so that a
function loading one brick does not pay for the others.
"""

from __future__ import annotations

import importlib

from bricks.base import Brick

BRICK_MODULES: dict[str, str] = {
    "ingest": "bricks.ingest",
    "calibrate": "bricks.calibrate",
    "coordinates": "bricks.coordinates",
    "screen": "bricks.screen",
    "detect": "bricks.detect",
    "notice": "bricks.notice",
    "exposure": "bricks.exposure",
    "lightcurve": "bricks.lightcurve",
    "spectrum": "bricks.spectrum",
    "quicklook": "bricks.quicklook",
}


def get_brick(name: str) -> Brick:
    """The brick called ``name``; ``KeyError`` naming the valid choices otherwise."""
    try:
        module = BRICK_MODULES[name]
    except KeyError:
        raise KeyError(f"unknown brick {name!r}; valid: {sorted(BRICK_MODULES)}") from None
    return importlib.import_module(module).BRICK


def all_bricks() -> list[Brick]:
    """Every registered brick, in pipeline order."""
    return [get_brick(name) for name in BRICK_MODULES]
