"""`mxt` commands: science (caldb build, simulate; pipeline run from local/cli_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import click

from local.cli_pipeline import pipeline

CALDB_INDEX = "caldb.indx"


@click.group("caldb")
def caldb() -> None:
    """The model calibration database (CALDB)."""


@caldb.command("build")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("caldb"),
    show_default=True,
    help="directory to write the CALDB files and caldb.indx into",
)
def caldb_build(out: Path) -> None:
    """Write the model CALDB: one FITS file per codename and a caldb.indx listing.

    Files are replaced atomically, so building twice into one directory is safe.
    """
    from bricks.calibration import caldb_index_lines, model_caldb_hdulists

    files = model_caldb_hdulists()
    out.mkdir(parents=True, exist_ok=True)
    for name, hdul in files.items():
        tmp = out / f".{name}.tmp"
        hdul.writeto(tmp, overwrite=True, checksum=True)
        tmp.replace(out / name)
    (out / CALDB_INDEX).write_text(
        "# codename  valid-date valid-time  file  extension  boundary\n"
        + "\n".join(caldb_index_lines(files))
        + "\n"
    )
    click.echo(f"wrote {len(files)} CALDB files and {CALDB_INDEX} to {out}")


@click.command("simulate")
@click.option(
    "--scene",
    "scene_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="scene YAML (fields of bricks.simulate.Scene); CLI options override it",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="L0 file to write (default <OBS_ID>_mxt_l0.fits)",
)
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the truth (sources, counts, boresight error) as JSON")  # fmt: skip
@click.option("--obs-id", default=None, help="observation id")
@click.option("--ra", "ra_pnt", type=float, default=None, help="pointing RA, deg")
@click.option("--dec", "dec_pnt", type=float, default=None, help="pointing Dec, deg")
@click.option("--roll", type=float, default=None, help="roll (position angle of +RAWY), deg")
@click.option("--duration", type=float, default=None, help="observation length, s")
@click.option("--seed", type=int, default=None, help="random seed")
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="RA,DEC,FLUX[,GAMMA[,NH[,ALPHA]]]",
    help="a source (deg, deg, erg/cm²/s 0.3-10 keV absorbed, Γ, NH 1e22, decay α); repeatable",
)
@click.option(
    "--trigger-offset",
    type=float,
    default=None,
    help="trigger this many seconds before the start (for decaying sources)",
)
def simulate_command(
    scene_path: Path | None,
    out: Path | None,
    truth: Path | None,
    sources: tuple[str, ...],
    trigger_offset: float | None,
    **options: object,
) -> None:
    """Simulate an L0 observation file from a scene through the model CALDB."""
    import json

    import yaml
    from pydantic import ValidationError

    from bricks.simulate import Scene, simulate

    fields: dict = yaml.safe_load(scene_path.read_text()) if scene_path else {}
    if not isinstance(fields, dict):
        raise click.BadParameter("the scene YAML must be a mapping", param_hint="--scene")
    fields.update({k: v for k, v in options.items() if v is not None})
    if sources:
        fields["sources"] = [_parse_source(text) for text in sources]
    if trigger_offset is not None:
        start = fields.get("tstart", Scene.model_fields["tstart"].default)
        fields["trigger_time"] = start - trigger_offset
    try:
        scene = Scene.model_validate(fields)
    except ValidationError as exc:
        raise click.ClickException(f"invalid scene:\n{exc}") from None
    l0, truth_dict = simulate(scene)
    path = out or Path(f"{scene.obs_id}_mxt_l0.fits")
    l0.writeto(path, overwrite=True, checksum=True)
    if truth:
        summary = {k: v for k, v in truth_dict.items() if k not in ("origin", "energy_ev")}
        truth.write_text(json.dumps(summary, indent=2))
    click.echo(f"wrote {path}: {truth_dict['n_events']} events, {scene.duration:g} s")


def _parse_source(text: str) -> dict[str, float]:
    names = ("ra", "dec", "flux", "photon_index", "nh", "decay_index")
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: numbers expected", param_hint="--source") from None
    if not 3 <= len(values) <= len(names):
        raise click.BadParameter(
            f"{text!r}: give RA,DEC,FLUX[,GAMMA[,NH[,ALPHA]]]", param_hint="--source"
        )
    return dict(zip(names, values, strict=False))


# science commands; the in-process pipeline (`mxt pipeline run`) lives in local/cli_pipeline.py
COMMANDS: list[click.Command] = [caldb, simulate_command, pipeline]
