"""The ``mxt`` command line: one group, commands contributed by focused modules.

Each ``local/cli_*.py`` module exposes ``COMMANDS``, a list of click commands or
groups. Modules import heavy packages (astropy, boto3, sqlalchemy) inside the
command bodies so that ``mxt --help`` stays instant.
"""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES = (
    "local.cli_platform",  # up, down, status, ls, invoke, logs, worker, dead-letters
    "local.cli_science",  # caldb, simulate, pipeline
    "local.cli_runs",  # submit, runs, run, cancel, rerun, products, demo
    "local.cli_proxy",  # proxy nginx
    "local.cli_db",  # db upgrade, db current
    "local.cli_users",  # users list, add, remove
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxt")
def main() -> None:
    """Ground processing for SVOM's Microchannel X-ray Telescope (MXT)."""


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in getattr(module, "COMMANDS", []):
            main.add_command(command)


_register()
