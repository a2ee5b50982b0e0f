"""A ``stack.yml`` listing some of the repository's storage functions, for embedded stacks."""

from __future__ import annotations

from pathlib import Path

import yaml

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
    document = {
        "version": 1.0,
        "provider": {"name": "openfaas"},
        "configuration": {"templates": [{"name": "python3-mxt"}]},
        "functions": entries,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
