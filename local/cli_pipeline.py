"""``mxt pipeline run FILE --out DIR``: every brick in process on one L0 file.

For scientists who want the products without the platform, and the reference the
function chain must reproduce: products are serialised by
:func:`bricks.pipeline.serialise_product`, like the function adapters do. Each
product is written as soon as it exists (atomically: a temporary file renamed), and
intermediate event lists are dropped once no later brick needs them, so memory stays
bounded for big observations. ``manifest.json`` lists every product (file, sha256,
size, brick and version), every brick's outcome, the CALDB files and the config.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click


def read_caldb_directory(directory: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Calibration objects from every FITS file under ``directory`` (``mxt caldb build``).

    Parameters
    ----------
    directory
        A directory of CALDB FITS files (searched recursively).

    Returns
    -------
    calibration, files
        Objects keyed by codename, and per file its path (relative), sha256 and codenames.

    Raises
    ------
    bricks.errors.BadInput
        A file that is not readable FITS, or a codename present in two files.
    """
    from astropy.io import fits

    from bricks.calibration import calibration_from_hdulist
    from bricks.errors import BadInput

    calibration: dict[str, Any] = {}
    files: list[dict[str, str]] = []
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".fits", ".fit"))
    for path in paths:
        data = path.read_bytes()
        try:
            with fits.open(path) as hdul:
                found = calibration_from_hdulist(hdul)
        except (OSError, ValueError) as exc:
            raise BadInput(f"CALDB file {path} is not a readable calibration file: {exc}") from exc
        twice = sorted(set(found) & set(calibration))
        if twice:
            raise BadInput(f"CALDB codename(s) {twice} appear in more than one file ({path})")
        calibration.update(found)
        files.append(
            {
                "file": str(path.relative_to(directory)),
                "sha256": hashlib.sha256(data).hexdigest(),
                "codenames": ",".join(sorted(found)),
            }
        )
    if not calibration:
        raise BadInput(f"no CALDB files with CCNM0001 codenames under {directory}")
    return calibration, files


def _write_atomically(path: Path, product: Any, value: Any) -> tuple[int, str]:
    """Write a product through a temporary file renamed into place; its size and sha256."""
    from bricks.pipeline import write_product

    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as stream:
            write_product(product, value, stream)
        size, sha256 = partial.stat().st_size, _sha256_file(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return size, sha256


def _read_config(path: Path | None) -> dict[str, Any]:
    import yaml

    from bricks.errors import BadInput

    if path is None:
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise BadInput(f"config {path} must map brick names to parameters")
    return config


def _progress_line(event: Any) -> None:
    prefix = f"[{event.index:2d}/{event.total}] {event.brick:<12s}"
    if event.stage == "start":
        click.echo(f"{prefix} running", err=True)
    elif event.stage == "done":
        click.echo(f"{prefix} done in {event.seconds:.2f} s", err=True)
    else:
        click.echo(f"{prefix} skipped: {event.reason}", err=True)


def run_to_directory(
    l0_path: Path,
    out: Path,
    caldb: Path | None = None,
    config_path: Path | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    """Run the pipeline on ``l0_path``, write every product and the manifest into ``out``.

    Returns the manifest. Raises the brick's classified error when a brick fails, after
    writing a manifest that says so (the products written until then stay, whole).
    """
    from astropy.io import fits

    from bricks.calibration import model_calibrations
    from bricks.errors import MxtError, Unprocessable
    from bricks.pipeline import run_pipeline

    config = _read_config(config_path)
    if caldb is None:
        calibration, caldb_files = model_calibrations(), [{"file": "model (in memory)"}]
    else:
        calibration, caldb_files = read_caldb_directory(caldb)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "input": {"file": l0_path.name, "sha256": _sha256_file(l0_path)},
        "caldb": caldb_files,
        "config": config,
        "bricks": [],
        "products": [],
        "status": "running",
    }

    def on_product(product: Any, value: Any, brick: Any) -> None:
        size, sha256 = _write_atomically(out / product.filename, product, value)
        manifest["products"].append(
            {
                "name": product.name,
                "file": product.filename,
                "kind": product.kind,
                "brick": brick.name,
                "brick_version": brick.version,
                "size": size,
                "sha256": sha256,
            }
        )

    def progress(event: Any) -> None:
        if event.stage != "start":
            manifest["bricks"].append(
                {
                    "name": event.brick,
                    "status": event.stage,
                    "reason": event.reason,
                    "seconds": round(event.seconds, 4),
                }
            )
        if echo:
            _progress_line(event)

    try:
        try:
            l0 = fits.open(l0_path, memmap=True)
        except (OSError, ValueError) as exc:
            raise Unprocessable(f"{l0_path.name} is not a readable FITS file: {exc}") from exc
        with l0:
            run_pipeline(l0, calibration, config, progress, on_product, retain=False)
        manifest["status"] = "done"
    except MxtError as exc:
        manifest["status"] = "failed"
        manifest["error"] = exc.to_dict()
        raise
    finally:
        (out / ".manifest.json.partial").write_bytes(_manifest_bytes(manifest))
        os.replace(out / ".manifest.json.partial", out / "manifest.json")
    return manifest


def _versions(manifest: dict[str, Any]) -> dict[str, str]:
    from bricks.registry import get_brick

    return {entry["name"]: get_brick(entry["name"]).version for entry in manifest["bricks"]}


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    manifest = {**manifest, "brick_versions": _versions(manifest)}
    return (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@click.group("pipeline")
def pipeline() -> None:
    """Run the science pipeline in this process, without the platform."""


@pipeline.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the products and manifest.json.",
)
@click.option(
    "--caldb",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of CALDB FITS files (default: the model CALDB in memory).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file: {brick name: {parameter: value}}.",
)
def run_command(file: Path, out: Path, caldb: Path | None, config_path: Path | None) -> None:
    """Run every brick on the L0 file FILE and write the products into --out."""
    from bricks.errors import MxtError

    try:
        manifest = run_to_directory(file, out, caldb, config_path)
    except MxtError as exc:
        click.echo(f"error ({exc.kind}): {exc.reason}", err=True)
        sys.exit(2 if exc.kind == "bad_input" else 1)
    click.echo(f"{len(manifest['products'])} products and manifest.json in {out}")


COMMANDS: list[click.Command] = [pipeline]
