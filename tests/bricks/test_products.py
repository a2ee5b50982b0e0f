"""Contract of the product catalogue: bricks, registry and developer guide agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bricks import products
from bricks.base import Product
from bricks.registry import all_bricks

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "development.md"
KINDS = {"fits", "png", "text", "json"}
# A product cell entry: `name`, then perhaps a parenthesis "(json)", "(optional)", ...
ENTRY = re.compile(r"`(\w+)`(?:\s*\(([^)]*)\))?")


def _uses() -> list[tuple[str, str, Product]]:
    """(brick, "input"/"output", product) for every declaration in the registry."""
    return [
        (brick.name, role, product)
        for brick in all_bricks()
        for role, declared in (("input", brick.inputs), ("output", brick.outputs))
        for product in declared
    ]


def test_every_declaration_is_the_catalogue_entry():
    for brick, role, product in _uses():
        assert product.name in products.CATALOGUE, f"{brick} {role} {product.name} not catalogued"
        entry = products.CATALOGUE[product.name]
        assert (product.filename, product.kind) == (entry.filename, entry.kind), (
            f"{brick} declares {role} {product} but the catalogue says {entry}"
        )
        assert product.kind in KINDS


def test_catalogue_names_and_filenames_are_unique():
    filenames = [p.filename for p in products.CATALOGUE.values()]
    assert len(set(filenames)) == len(filenames)
    assert all(name == p.name for name, p in products.CATALOGUE.items())


def test_every_input_is_made_by_some_brick_or_is_l0():
    made = {p.name for brick in all_bricks() for p in brick.outputs}
    for brick, role, product in _uses():
        if role == "input":
            assert product.name in made | {products.L0.name}, f"{brick} reads unmade {product}"


def test_each_product_has_one_producer_and_every_catalogued_one_is_used():
    producers: dict[str, list[str]] = {}
    for brick, role, product in _uses():
        if role == "output":
            producers.setdefault(product.name, []).append(brick)
    assert all(len(bricks) == 1 for bricks in producers.values()), producers
    used = {product.name for _, _, product in _uses()}
    assert used == set(products.CATALOGUE)


def test_as_optional_keeps_the_identity():
    optional = products.SOURCES.as_optional()
    assert optional.optional and not products.SOURCES.optional
    assert (optional.name, optional.filename, optional.kind) == (
        products.SOURCES.name,
        products.SOURCES.filename,
        products.SOURCES.kind,
    )


def _guide_table() -> list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]]:
    """Rows (brick, inputs, outputs) of the guide's brick table; entries (name, note)."""
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("| brick | inputs | outputs |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"malformed row in {GUIDE.name}: {line}"
        brick, inputs, outputs = cells
        rows.append((brick, ENTRY.findall(inputs), ENTRY.findall(outputs)))
    return rows


def test_guide_table_parser_reads_notes():
    assert ENTRY.findall("`a` (optional: absent when `x.y` is `z`), `b` (json)") == [
        ("a", "optional: absent when `x.y` is `z`"),
        ("b", "json"),
    ]


@pytest.mark.parametrize("role", ["inputs", "outputs"])
def test_guide_table_matches_the_registry(role):
    table = _guide_table()
    bricks = all_bricks()
    assert [row[0] for row in table] == [brick.name for brick in bricks]
    for (name, inputs, outputs), brick in zip(table, bricks, strict=True):
        documented = inputs if role == "inputs" else outputs
        declared = getattr(brick, role)
        assert [entry for entry, _ in documented] == [p.name for p in declared], name
        for (entry, note), product in zip(documented, declared, strict=True):
            assert note.startswith("optional") == product.optional, f"{name} {role} {entry}"
            if note in KINDS:
                assert note == product.kind, f"{name} {role} {entry}: guide says {note}"
