"""`mxt` commands for operators: submit, runs, run show, logs, products, cancel, rerun, demo.

They talk to the runs API of the gateway (``/mxt/runs``...) with the platform's
client (``local.cli_platform.Client``: the running stack's URL and admin password, or
``--gateway``). ``mxt submit`` and ``mxt demo`` also put the L0 file in the raw
bucket through the object store the settings name (the embedded stack's directory,
or S3/MinIO).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from local.cli_platform import DATA_DIR_OPTION, GATEWAY_OPTION, Client
from local.cli_platform import logs as function_logs

TERMINAL = ("succeeded", "failed", "cancelled")
STATE_MARK = {
    "pending": "·",
    "dispatched": "»",
    "running": "»",
    "succeeded": "✓",
    "failed": "✗",
    "cancelled": "⊘",
    "skipped": "–",
}


def _client(data_dir: Path | None, gateway: str | None) -> Client:
    return Client(data_dir, gateway)


def _use_stack_storage(client: Client) -> None:
    """Point this process's object store at the stack's data directory (embedded stack)."""
    os.environ.setdefault("MXT_DATA_DIR", str(client.data_dir))


def upload_raw(client: Client, path: Path, obs_id: str) -> str:
    """Put an L0 file in the raw bucket as ``<obs_id>/<file name>``; its reference."""
    _use_stack_storage(client)
    from storage.objects import get_store

    key = f"{obs_id}/{path.name}"
    with path.open("rb") as data:
        get_store().put("raw", key, data, content_type="application/fits")
    return f"raw/{key}"


def read_obs_id(path: Path) -> str:
    """``OBS_ID`` of an L0 file (a precise error when it is not one)."""
    from astropy.io import fits

    try:
        return str(fits.getheader(path, 0)["OBS_ID"])
    except (OSError, KeyError) as exc:
        raise click.ClickException(
            f"{path}: not an L0 file with an OBS_ID header ({exc})"
        ) from None


def follow_run(client: Client, run_id: str, quiet: bool = False, timeout: float = 3600) -> dict:
    """Poll a run until it ends, showing its progress; the final run.

    On a terminal one line is redrawn in place; otherwise a line is printed per change.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    redraw = sys.stdout.isatty()
    shown = ""
    while True:
        run = client.json("GET", f"/mxt/runs/{run_id}")
        line = progress_line(run)
        if not quiet and (redraw or line != shown):
            elapsed = f"{time.monotonic() - started:6.1f} s"
            click.echo(
                f"\r\033[K{line} {elapsed}" if redraw else f"{line} {elapsed}", nl=not redraw
            )
            shown = line
        if run["state"] in TERMINAL:
            if not quiet and redraw:
                click.echo()
            return run
        if time.monotonic() > deadline:
            raise click.ClickException(f"run {run_id} still {run['state']} after {timeout} s")
        time.sleep(0.2)


def progress_line(run: dict[str, Any]) -> str:
    """``[ToO] 6/10 bricks done · running: lightcurve, spectrum``."""
    tasks = run["tasks"]
    done = sum(t["state"] in ("succeeded", "skipped") for t in tasks)
    active = [t["brick"] for t in tasks if t["state"] in ("dispatched", "running")]
    failed = [t["brick"] for t in tasks if t["state"] == "failed"]
    line = f"[{run['programme']} {run['state']}] {done}/{len(tasks)} bricks done"
    if active:
        line += f" · running: {', '.join(active)}"
    if failed:
        line += f" · failed: {', '.join(failed)}"
    return line


def print_dag(run: dict[str, Any]) -> None:
    """The run's tasks in order, indented by depth in the DAG, with states and durations."""
    depth: dict[str, int] = {}
    for task in run["tasks"]:
        depth[task["brick"]] = 1 + max((depth.get(n, 0) for n in task["needs"]), default=-1)
    click.echo(
        f"run {run['run_id']}  {run['programme']} v{run['config_version']}  "
        f"obs {run['obs_id']}  {run['state']}"
        + (f"  ({run['reason']})" if run.get("reason") else "")
    )
    if run.get("parent_run_id"):
        click.echo(f"re-run of {run['parent_run_id']}")
    for task in run["tasks"]:
        seconds = f"{task['seconds']:7.2f} s" if task.get("seconds") is not None else " " * 9
        needs = f"  ← {', '.join(task['needs'])}" if task["needs"] else ""
        indent = "  " * depth[task["brick"]]
        line = f"  {STATE_MARK.get(task['state'], '?')} {seconds}  {indent}{task['brick']}"
        click.echo(f"{line:<48} {task['state']:<10} try {task['attempts']}{needs}")
        if task.get("error"):
            click.echo(f"{'':14}{task['error']}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--programme", type=click.Choice(["ToO", "CP", "GP"]), default=None,
              help="default: from the file's PROGRAM header")  # fmt: skip
@click.option("--config-version", type=int, default=None, help="configdb version to run")
@click.option("--wait/--no-wait", default=True, show_default=True, help="follow the run")
@DATA_DIR_OPTION
@GATEWAY_OPTION
def submit(
    file: Path,
    programme: str | None,
    config_version: int | None,
    wait: bool,
    data_dir: Path | None,
    gateway: str | None,
) -> None:
    """Upload an L0 FILE to the raw bucket and start its run."""
    client = _client(data_dir, gateway)
    raw = upload_raw(client, file, read_obs_id(file))
    body: dict[str, Any] = {"raw_key": raw}
    if programme:
        body["programme"] = programme
    if config_version:
        body["config_version"] = config_version
    run = client.json("POST", "/mxt/runs", body)
    click.echo(f"run {run['run_id']} started ({run['programme']}) for {raw}")
    if wait:
        run = follow_run(client, run["run_id"])
        print_dag(run)
        if run["state"] != "succeeded":
            sys.exit(1)


@click.command()
@click.option("--programme", type=click.Choice(["ToO", "CP", "GP"]), default=None)
@click.option("--state", default=None, help="pending, running, succeeded, failed, cancelled")
@click.option("--obs-id", default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@DATA_DIR_OPTION
@GATEWAY_OPTION
def runs(
    programme: str | None,
    state: str | None,
    obs_id: str | None,
    limit: int,
    data_dir: Path | None,
    gateway: str | None,
) -> None:
    """List runs, newest first."""
    from urllib.parse import urlencode

    query = {"programme": programme, "state": state, "obs_id": obs_id, "limit": limit}
    params = urlencode({k: v for k, v in query.items() if v is not None})
    page = _client(data_dir, gateway).json("GET", f"/mxt/runs?{params}")
    for run in page["items"]:
        click.echo(
            f"{run['run_id']}  {run['programme']:<4} {run['state']:<10} {run['obs_id'] or '-':<20} "
            f"{run['created_at'][:19]}  {run['reason'] or ''}"
        )


@click.group()
def run() -> None:
    """One run."""


@run.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="the run as JSON")
@DATA_DIR_OPTION
@GATEWAY_OPTION
def run_show(run_id: str, as_json: bool, data_dir: Path | None, gateway: str | None) -> None:
    """The run's DAG: each brick with its state, attempts and duration."""
    view = _client(data_dir, gateway).json("GET", f"/mxt/runs/{run_id}")
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        print_dag(view)


@click.command()
@click.argument("run_id", required=False)
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until the run ends")
@click.option("--task", default=None, help="only this brick's lines")
@click.option("--level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None,
              help="minimum level")  # fmt: skip
@click.option("--function", "name", default=None, help="a function's own output (no RUN_ID)")
@click.option("--tail", type=int, default=None, help="with --function: the last N lines")
@DATA_DIR_OPTION
@GATEWAY_OPTION
@click.pass_context
def logs(
    ctx: click.Context,
    run_id: str | None,
    follow: bool,
    task: str | None,
    level: str | None,
    name: str | None,
    tail: int | None,
    data_dir: Path | None,
    gateway: str | None,
) -> None:
    """Log lines of a run (RUN_ID), or of a function (--function NAME)."""
    if run_id is None:
        if name is None:
            raise click.UsageError("give a RUN_ID, or --function NAME")
        ctx.invoke(
            function_logs, name=name, follow=follow, tail=tail, data_dir=data_dir, gateway=gateway
        )
        return
    from urllib.parse import urlencode

    query = {"task": task, "level": level, "function": name}
    query = {k: v for k, v in query.items() if v is not None}
    client = _client(data_dir, gateway)
    if not follow:
        after = None
        while True:
            params = urlencode({**query, **({"after": after} if after else {})})
            page = client.json("GET", f"/mxt/runs/{run_id}/logs?{params}")
            for line in page["items"]:
                click.echo(format_log(line))
            after = page["next_after"]
            if after is None:
                return
    params = urlencode({**query, "follow": "true"})
    with client.request("GET", f"/mxt/runs/{run_id}/logs?{params}", timeout=None) as resp:
        event = None
        for raw in resp:
            text = raw.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: ") and event == "log":
                click.echo(format_log(json.loads(text[6:])))
            elif text.startswith("data: ") and event == "end":
                click.echo(f"-- run {json.loads(text[6:])['state']}")


def format_log(line: dict[str, Any]) -> str:
    """``time level function [brick] message``."""
    brick = (line.get("task_id") or "").rpartition(".")[2]
    return (
        f"{line['time'][11:23]} {line['level']:<7} {line.get('function') or '-':<22} "
        f"{brick:<11} {line['message']}"
    )


@click.command()
@click.argument("run_id")
@click.option("--download", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write every product into this directory")  # fmt: skip
@DATA_DIR_OPTION
@GATEWAY_OPTION
def products(
    run_id: str, download: Path | None, data_dir: Path | None, gateway: str | None
) -> None:
    """A run's products (name, size, sha256, key); --download DIR fetches them."""
    client = _client(data_dir, gateway)
    items = client.json("GET", f"/mxt/runs/{run_id}/products")["items"]
    for item in items:
        partial = " (partial)" if item["partial"] else ""
        click.echo(
            f"{item['name']:<16} {item['size']:>10} B  {item['sha256'][:12]}  "
            f"{item['bucket']}/{item['key']}{partial}"
        )
    if download is not None:
        _use_stack_storage(client)
        from storage.objects import get_store

        download.mkdir(parents=True, exist_ok=True)
        store = get_store()
        with click.progressbar(items, label="downloading", file=sys.stderr) as bar:
            for item in bar:
                target = download / Path(item["key"]).name
                with target.open("wb") as out:
                    store.download_to(item["bucket"], item["key"], out)
        click.echo(f"{len(items)} product(s) written to {download}")


@click.command()
@click.argument("run_id")
@DATA_DIR_OPTION
@GATEWAY_OPTION
def cancel(run_id: str, data_dir: Path | None, gateway: str | None) -> None:
    """Cancel a running run (calls in flight finish; nothing more starts)."""
    view = _client(data_dir, gateway).json("POST", f"/mxt/runs/{run_id}/cancel", {})
    click.echo(f"run {run_id} {view['state']}")


@click.command()
@click.argument("run_id")
@click.option("--config-version", type=int, default=None, help="another configdb version")
@click.option("--caldb-date", default=None, help="CALDB valid at this date (YYYY-MM-DD)")
@click.option("--set", "settings", multiple=True, metavar="BRICK.PARAM=VALUE",
              help="a parameter override (value parsed as JSON when it can be)")  # fmt: skip
@click.option("--wait/--no-wait", default=True, show_default=True)
@DATA_DIR_OPTION
@GATEWAY_OPTION
def rerun(
    run_id: str,
    config_version: int | None,
    caldb_date: str | None,
    settings: tuple[str, ...],
    wait: bool,
    data_dir: Path | None,
    gateway: str | None,
) -> None:
    """Process a run's observation again under a new run id (the old run is kept)."""
    body: dict[str, Any] = {"config": parse_settings(settings)}
    if config_version:
        body["config_version"] = config_version
    if caldb_date:
        body["caldb_date"] = caldb_date
    client = _client(data_dir, gateway)
    new = client.json("POST", f"/mxt/runs/{run_id}/rerun", body)
    click.echo(f"run {new['run_id']} started, re-run of {run_id}")
    if wait:
        print_dag(follow_run(client, new["run_id"]))


def parse_settings(settings: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("lightcurve.bin_s=20",)`` → ``{"lightcurve": {"bin_s": 20}}``."""
    config: dict[str, dict[str, Any]] = {}
    for item in settings:
        target, sep, text = item.partition("=")
        brick, dot, param = target.partition(".")
        if not sep or not dot or not brick or not param:
            raise click.BadParameter(f"{item!r} is not BRICK.PARAM=VALUE", param_hint="--set")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        config.setdefault(brick, {})[param] = value
    return config


@click.command()
@click.option("--port", type=int, default=8080, show_default=True, help="gateway port")
@DATA_DIR_OPTION
@click.option("--events", type=int, default=None, help="approximate event count of the scene")
@click.option("--seed", type=int, default=None, help="simulation seed (default: from the clock)")
@click.option(
    "--keep/--no-keep",
    default=True,
    show_default=True,
    help="leave the stack running for the dashboard (--no-keep stops the stack the demo started)",
)
def demo(
    port: int, data_dir: Path | None, events: int | None, seed: int | None, keep: bool
) -> None:
    """Start the stack, simulate a GRB afterglow, run the ToO chain, and show what it found."""
    from local.demo import run_demo

    sys.exit(run_demo(port, data_dir, events, seed, keep))


COMMANDS: list[click.Command] = [submit, runs, run, logs, products, cancel, rerun, demo]
