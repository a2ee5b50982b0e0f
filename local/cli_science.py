"""`mxt` commands: science."""

from __future__ import annotations

import click

from local.cli_pipeline import pipeline

COMMANDS: list[click.Command] = [pipeline]
