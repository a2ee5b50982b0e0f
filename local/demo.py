"""``mxt demo``: the whole system on one simulated gamma-ray burst, on a laptop.

Starts the embedded stack (or uses the one already running on the data directory),
ingests the model CALDB if the index lacks it, simulates a GRB afterglow seen by MXT
(trigger, bright decaying afterglow, particle and sky background, attitude jitter),
drops the L0 file in the raw bucket — the arrival event starts the ToO run, as in
operations — follows the run, and prints the position against the simulated truth,
the decay index, the products and the dashboard address. No Docker, no network.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

ARCSEC_PER_DEG = 3600.0


def run_demo(
    port: int, data_dir: Path | None, events: int | None, seed: int | None, keep: bool = True
) -> int:
    """Run the demo; the exit status (0 when the ToO run succeeded).

    Parameters
    ----------
    port
        Gateway port of the stack the demo starts (unused when one already runs).
    data_dir
        State directory of the stack (default: ``MXT_DATA_DIR`` or the per-user one).
    events
        Approximate event count of the simulated scene (default: a 3000 s observation).
    seed
        Simulation seed (default: from the clock).
    keep
        Leave the stack running at the end so the dashboard can be browsed; when false,
        a stack this demo started is stopped before returning (one it found running is
        never stopped).
    """
    from local.cli_platform import _data_dir

    clock = time.monotonic()
    data_dir = _data_dir(data_dir)
    # before the stack starts: its functions find the schema migrated and the CALDB in place
    os.environ["MXT_DATA_DIR"] = str(data_dir)
    created = prepare_caldb(data_dir)
    started = False
    try:
        stack_url, started = ensure_stack(data_dir, port)
        click.echo(f"stack ready at {stack_url} ({time.monotonic() - clock:.1f} s)")
        click.echo(f"CALDB: {created} model CALDB files ingested" if created else "CALDB: in place")
        run, outcome = _run_chain(data_dir, stack_url, events, seed)
    finally:
        # also on Ctrl-C or an error: --no-keep promises no stack left behind
        stopped = not keep and started and _stop(data_dir)
    _summary(data_dir, stack_url, run, outcome, clock, started, stopped)
    return 0 if run["state"] == "succeeded" else 1


def _run_chain(
    data_dir: Path, stack_url: str, events: int | None, seed: int | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Simulate, drop the L0 file, follow its ToO run; the run and the position check."""
    from local.cli_platform import Client
    from local.cli_runs import follow_run, print_dag

    client = Client(data_dir, None)
    scene = demo_scene(seed if seed is not None else int(time.time()) % 100_000, events)
    l0, truth = simulate_observation(scene)
    click.echo(
        f"simulated {scene.object} ({scene.obs_id}): {truth['n_events']} events, "
        f"{truth['sources'][0]['detected']} from the afterglow, decay index "
        f"{scene.sources[0].decay_index}"
    )
    run_id = drop_in_raw_bucket(data_dir, client, l0, scene.obs_id)
    click.echo(f"raw file landed in the raw bucket; run {run_id} started by the arrival event")
    run = follow_run(client, run_id)
    print_dag(run)
    if run["state"] != "succeeded":
        click.echo(f"the run {run['state']}: {run['reason']}", err=True)
        return run, None
    return run, report(client, run, scene, stack_url)


def prepare_caldb(data_dir: Path) -> int:
    """Migrate the schema and ingest the model CALDB when the index lacks it; files added.

    A second demo on the same data directory finds the model files already indexed
    under the same names (rebuilt model files need not be byte-identical, which the
    index refuses as a conflict): those are kept and used.
    """
    from bricks.errors import Conflict
    from local.chainkit import prepare_data_dir

    try:
        return int(prepare_data_dir(data_dir, os.environ.get("MXT_DATABASE_URL")))
    except Conflict as error:
        click.echo(f"CALDB: keeping the files already indexed ({error})")
        return 0


def _stop(data_dir: Path) -> bool:
    """Stop the stack on ``data_dir`` (drain, then every child); whether one was running."""
    from local.stack import stop_stack

    click.echo("stopping the stack (--no-keep)…")
    return stop_stack(data_dir)


def _summary(
    data_dir: Path,
    url: str,
    run: dict[str, Any],
    found: dict[str, Any] | None,
    clock: float,
    started: bool,
    stopped: bool,
) -> None:
    """The last lines: the outcome, where to look, and how to stop what is left running."""
    click.echo("")
    click.echo(f"── summary ({time.monotonic() - clock:.1f} s) " + "─" * 40)
    click.echo(f"run        {run['run_id']}: {run['state']}")
    if found is not None:
        click.echo(
            f"found      the afterglow {found['offset_arcsec']:.1f}″ from the truth, "
            f"90 % error radius {found['err90_arcsec']:.1f}″ ({found['inside']})"
        )
    else:
        click.echo(f"reason     {run.get('reason')}")
    if stopped:
        click.echo("stack      stopped (--no-keep)")
        return
    click.echo(f"dashboard  {url}/ui/#/runs/{run['run_id']}")
    password_file = data_dir / "secrets" / "basic-auth-password"
    click.echo(f"login      user admin, password in {shlex.quote(str(password_file))}")
    click.echo("           (others: mxt users add NAME --role scientist|operator|admin)")
    how = "left running" if started else "was already running before the demo: left running"
    click.echo(f"stack      {how}; stop it with:")
    click.echo(f"  mxt down --data-dir {shlex.quote(str(data_dir))}")


def ensure_stack(data_dir: Path, port: int) -> tuple[str, bool]:
    """The URL of the stack on ``data_dir`` and whether this call started it."""
    from local.chainkit import REPO_STACK
    from local.stack import EmbeddedStack, read_state

    state = read_state(data_dir)
    if state is not None:
        return str(state["gateway_url"]), False
    stack = EmbeddedStack(REPO_STACK, data_dir, port=port, env={"MXT_DATA_DIR": str(data_dir)})
    # its own process group: it outlives this command unless --no-keep stops it
    stack.start(timeout=120)
    return stack.url, True


def demo_scene(seed: int, events: int | None) -> Any:
    """A bright X-ray afterglow 300 s after its trigger, slightly off the pointing."""
    from bricks.simulate import Scene, Source

    rng = np.random.default_rng(seed)
    t0 = 288_000_000.0 + 86_400.0 * float(rng.integers(0, 300))
    duration = 3000.0 if events is None else max(300.0, min(1.0e5, events / 1.3))
    ra_pnt, dec_pnt = float(rng.uniform(0, 360)), float(rng.uniform(-60, 60))
    offset = rng.normal(0.0, 4.0 / 60.0, 2)  # degrees: a few arcmin off axis, as ECLAIRs gives
    return Scene(
        obs_id=f"demo{seed:05d}",
        object=f"GRB demo {seed}",
        burst_id=f"sb{seed:08d}",
        program="TargetOfOpportunity-Nom",
        ra_pnt=ra_pnt,
        dec_pnt=dec_pnt,
        roll=float(rng.uniform(0, 360)),
        trigger_time=t0,
        tstart=t0 + 300.0,
        duration=duration,
        jitter_arcsec=3.0,
        sources=[
            Source(
                ra=(ra_pnt + offset[0] / np.cos(np.radians(dec_pnt))) % 360.0,
                dec=dec_pnt + offset[1],
                flux=3e-10,
                photon_index=2.0,
                nh=0.2,
                decay_index=1.2,
                flux_time_s=300.0,
            )
        ],
        seed=seed,
    )


def simulate_observation(scene: Any) -> tuple[Any, dict[str, Any]]:
    """The L0 file and the truth of a scene."""
    from bricks.simulate import simulate

    return simulate(scene)


def drop_in_raw_bucket(data_dir: Path, client: Any, l0: Any, obs_id: str) -> str:
    """Upload the L0 file and publish its arrival; the run id the arrival started."""
    from local.chainkit import fits_bytes
    from local.stack import read_state
    from storage.events import publish_object_created
    from storage.objects import get_store

    key = f"{obs_id}/{obs_id}_mxt_l0.fits"
    info = get_store().put("raw", key, fits_bytes(l0), content_type="application/fits")
    state = read_state(data_dir) or {}
    asyncio.run(publish_object_created(str(state.get("nats_url")), info))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = client.json("GET", f"/mxt/runs?obs_id={obs_id}")
        if page["items"]:
            return str(page["items"][0]["run_id"])
        time.sleep(0.1)
    raise click.ClickException(f"no run started for {key} within 60 s of its arrival")


def report(client: Any, run: dict[str, Any], scene: Any, url: str) -> dict[str, Any]:
    """Print the position against the truth, the decay index and the products.

    Returns
    -------
    dict
        ``offset_arcsec`` (found to true position), ``err90_arcsec`` (90 % error radius)
        and ``inside`` ("inside" or "OUTSIDE") for the summary.
    """
    import json

    from storage.objects import get_store

    items = client.json("GET", f"/mxt/runs/{run['run_id']}/products")["items"]
    by_name = {item["name"]: item for item in items}
    store = get_store()

    def product_json(name: str) -> dict[str, Any]:
        item = by_name[name]
        return json.loads(store.get(item["bucket"], item["key"]))

    position = product_json("position")
    truth = scene.sources[0]
    offset = angular_offset_arcsec(position["ra"], position["dec"], truth.ra, truth.dec)
    click.echo("")
    click.echo(
        f"position   RA {position['ra']:.5f}°  Dec {position['dec']:+.5f}°  "
        f"error radius {position['err90_arcsec']:.1f}″ (90 %, with the 25″ systematic)"
    )
    inside = "inside" if offset <= position["err90_arcsec"] else "OUTSIDE"
    click.echo(
        f"truth      RA {truth.ra:.5f}°  Dec {truth.dec:+.5f}°  offset {offset:.1f}″ ({inside})"
    )
    if "lightcurve_fit" in by_name:
        fit = product_json("lightcurve_fit")
        alpha, error = fit.get("alpha", float("nan")), fit.get("alpha_err", float("nan"))
        click.echo(f"decay      α = {alpha:.2f} ± {error:.2f}  (simulated {truth.decay_index})")
    click.echo(f"products   {len(items)}: " + ", ".join(sorted(by_name)))
    click.echo(f"runs API   {url}/mxt/runs/{run['run_id']}")
    return {"offset_arcsec": offset, "err90_arcsec": position["err90_arcsec"], "inside": inside}


def angular_offset_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle separation of two ICRS positions (degrees in), in arcseconds."""
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    cos = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) * ARCSEC_PER_DEG)
