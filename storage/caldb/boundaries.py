"""CALDB boundary conditions (``CBDn0001``) and how a requested value matches them.

A boundary reads ``NAME(VALUE)UNIT``, where VALUE is a number, a range
``LOW-HIGH`` (either bound may be negative: ``-70--60``), a comma-separated list of
words, or ``NONE``; UNIT may be empty. A query gives ``NAME(VALUE)UNIT`` too, or
quzcif's ``NAME.eq.VALUE``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from bricks.errors import BadInput

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOUNDARY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\((.*)\)\s*([^()\s]*)\s*$")
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*-\s*({_NUMBER})\s*$")
_SINGLE = re.compile(rf"^\s*({_NUMBER})\s*$")
_QUZCIF = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\.eq\.(.+?)\s*$", re.IGNORECASE)


class Boundary(BaseModel):
    """A parsed boundary: a numeric interval, or a set of words; names upper-case."""

    name: str
    low: float | None = None
    high: float | None = None
    words: list[str] | None = None
    unit: str = ""
    text: str


class Requirement(BaseModel):
    """A queried boundary value."""

    name: str
    number: float | None = None
    word: str | None = None
    unit: str = ""


def parse_boundary(text: str) -> Boundary | None:
    """Parse a ``CBDn0001`` value; ``NONE`` (no dependency) gives None.

    Raises
    ------
    ValueError
        When the text is not ``NAME(VALUE)UNIT``.
    """
    if text.strip().upper() == "NONE":
        return None
    match = _BOUNDARY.match(text)
    if not match:
        raise ValueError(f"boundary {text!r} is not of the form NAME(VALUE)UNIT")
    name, value, unit = match.group(1).upper(), match.group(2), match.group(3)
    if value.strip().upper() == "NONE":
        return None
    if found := _RANGE.match(value):
        low, high = sorted((float(found.group(1)), float(found.group(2))))
        return Boundary(name=name, low=low, high=high, unit=unit, text=text)
    if found := _SINGLE.match(value):
        number = float(found.group(1))
        return Boundary(name=name, low=number, high=number, unit=unit, text=text)
    words = [w.strip().upper() for w in value.split(",") if w.strip()]
    return Boundary(name=name, words=words, unit=unit, text=text)


def parse_requirement(text: str) -> Requirement:
    """Parse a queried value, ``TEMP(-65)C`` or ``TEMP.eq.-65``.

    Raises
    ------
    BadInput
        Naming the text that could not be read.
    """
    quzcif = _QUZCIF.match(text)
    if quzcif:
        name, value, unit = quzcif.group(1), quzcif.group(2), ""
    elif match := _BOUNDARY.match(text):
        name, value, unit = match.group(1), match.group(2), match.group(3)
    else:
        raise BadInput(f"boundary {text!r}: expected NAME(VALUE)UNIT or NAME.eq.VALUE")
    if _SINGLE.match(value):
        return Requirement(name=name.upper(), number=float(value), unit=unit)
    if "," in value or not value.strip():
        raise BadInput(f"boundary {text!r}: give one value")
    return Requirement(name=name.upper(), word=value.strip().upper(), unit=unit)


def satisfies(boundaries: list[dict], requirements: list[Requirement]) -> bool:
    """Whether a dataset's boundaries accept every requirement.

    A dataset without a boundary on a parameter does not depend on it and accepts
    any value (as in HEASARC's CALDB); units must agree when both are given.
    """
    for requirement in requirements:
        for raw in boundaries:
            boundary = Boundary.model_validate(raw)
            if boundary.name != requirement.name:
                continue
            if boundary.unit and requirement.unit and boundary.unit != requirement.unit:
                return False
            if not _accepts(boundary, requirement):
                return False
    return True


def _accepts(boundary: Boundary, requirement: Requirement) -> bool:
    if boundary.words is not None:
        return requirement.word is not None and requirement.word in boundary.words
    if requirement.number is None:
        return False
    return boundary.low <= requirement.number <= boundary.high  # type: ignore[operator]
