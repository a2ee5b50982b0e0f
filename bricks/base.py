"""What every brick declares: its named inputs, outputs, CALDB needs and parameters.

A brick is a pure function ``run(inputs, calibration, config) -> outputs`` wrapped in a
:class:`Brick` that states what it reads and writes, in the manner of LSST's
``PipelineTaskConnections`` without the ceremony. The function adapter (object store
↔ HDUList) and the in-process pipeline both work from these declarations, and a
contract test checks them against the registry.

Product values passed between bricks:

- FITS products: ``astropy.io.fits.HDUList``;
- pictures (PNG): ``bytes``;
- text products (DS9 region, VOEvent XML): ``str``;
- JSON products (observation metadata, position, notice): ``dict``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict


class BrickConfig(BaseModel):
    """Base of every brick's parameters: strict, validated once, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Products = Mapping[str, Any]
Calibrations = Mapping[str, Any]
RunFunction = Callable[[Products, Calibrations, Any], dict[str, Any]]


@dataclass(frozen=True)
class Product:
    """A named product a brick reads or writes.

    Parameters
    ----------
    name
        Product name shared across bricks (``"l1_events"``).
    filename
        File name under the run's product prefix (``"mxt_l1_evt.fits"``).
    kind
        ``"fits"``, ``"png"``, ``"text"`` or ``"json"``: how it is serialised.
    optional
        As an input: the brick runs without it. As an output: may be absent.
    """

    name: str
    filename: str
    kind: str
    optional: bool = False

    def as_optional(self) -> Product:
        """This product at a use site that tolerates its absence."""
        return replace(self, optional=True)


@dataclass(frozen=True)
class Brick:
    """A pipeline brick: a pure ``run`` and the declarations around it.

    Parameters
    ----------
    name
        Brick name, also the function name suffix (``brick-<name>``).
    version
        Brick version recorded in every product's provenance.
    inputs, outputs
        Products read and written.
    caldb
        CALDB codenames (``CCNM0001``) whose files ``run`` receives, keyed by codename.
    config
        The strict parameter model (a :class:`BrickConfig` subclass).
    run
        ``run(inputs, calibration, config) -> outputs``; pure, no I/O.
    """

    name: str
    version: str
    inputs: tuple[Product, ...]
    outputs: tuple[Product, ...]
    caldb: tuple[str, ...]
    config: type[BrickConfig]
    run: RunFunction = field(repr=False)

    def __call__(
        self,
        inputs: Products,
        calibration: Calibrations,
        config: BrickConfig | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Validate the parameters, check the inputs are present, and run."""
        params = config if isinstance(config, BrickConfig) else self.config(**(config or {}))
        missing = [p.name for p in self.inputs if not p.optional and p.name not in inputs]
        if missing:
            from bricks.errors import BadInput

            raise BadInput(f"brick {self.name} is missing its input(s) {missing}")
        return self.run(inputs, calibration, params)
