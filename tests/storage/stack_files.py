"""A ``stack.yml`` listing some of the repository's storage functions, for embedded stacks."""

from __future__ import annotations

from pathlib import Path

import yaml

from local.stack import write_stack_file

REPOSITORY = Path(__file__).resolve().parents[2]


def write_storage_stack(path: Path, functions: list[str]) -> Path:
    """Write a stack file with ``functions`` as the repository's ``stack.yml`` declares them.

    Handlers point at the repository's folders; images are dropped (nothing is built).
    """
    declared = yaml.safe_load((REPOSITORY / "stack.yml").read_text())["functions"]
    entries = {}
    for name in functions:
        entry = dict(declared[name])
        entry["handler"] = str(REPOSITORY / "functions" / name)
        entry.pop("image", None)
        entries[name] = entry
    return write_stack_file(path, entries)
