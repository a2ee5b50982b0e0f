"""The operator's commands against a running stack: submit, runs, run show, logs, products."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from local.cli import main


def mxt(runs: Any, *args: str) -> Any:
    stack = runs.stack
    result = CliRunner().invoke(
        main,
        [*args, "--data-dir", str(stack.data_dir), "--gateway", stack.url],
        env={
            "MXT_DATA_DIR": str(stack.data_dir),
            "MXT_SECRETS_DIR": str(stack.data_dir / "secrets"),
        },
        catch_exceptions=False,
    )
    return result


def test_operator_commands(runs: Any, observation_factory: Any, tmp_path: Path) -> None:
    l0, _ = observation_factory(program="GeneralProgram")
    path = tmp_path / "obs_mxt_l0.fits"
    l0.writeto(path)

    submitted = mxt(runs, "submit", str(path), "--programme", "CP")
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.output.split()[1]
    assert "CP" in submitted.output and "✓" in submitted.output and "quicklook" in submitted.output

    listed = mxt(runs, "runs", "--programme", "CP")
    assert run_id in listed.output

    shown = mxt(runs, "run", "show", run_id)
    assert "succeeded" in shown.output
    # the DAG: each brick with its state and duration, the needs shown
    assert "← detect, lightcurve, spectrum" in shown.output

    logs = mxt(runs, "logs", run_id, "--task", "detect")
    assert logs.exit_code == 0 and "brick-detect" in logs.output
    followed = mxt(runs, "logs", run_id, "-f")
    assert followed.output.rstrip().endswith("-- run succeeded")

    out = tmp_path / "products"
    products = mxt(runs, "products", run_id, "--download", str(out))
    assert products.exit_code == 0, products.output
    from bricks.registry import all_bricks

    every_file = {p.filename for brick in all_bricks() for p in brick.outputs}
    assert {p.name for p in out.iterdir()} == every_file

    missing = mxt(runs, "run", "show", "r-19990101t000000-abcdef")
    assert missing.exit_code != 0 and "404" in missing.output
