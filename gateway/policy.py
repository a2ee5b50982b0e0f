"""Who may call what: the one declared access policy of the gateway, worker and connector.

Every function declares its access in the annotation ``com.mxt.access``:

============  ===============================================================
``internal``  only the platform (service credential): bricks, ``orchestrator-advance``,
              ``orchestrator-raw-arrived``, anything only the platform calls. The default
              when a function declares nothing: closed unless opened.
``public``    anyone (anonymous), every method
``scientist`` / ``operator`` / ``admin``: that role or a higher one, every method
``read=R, write=W``: reads (GET, HEAD) need R, other methods W
============  ===============================================================

The older annotation ``com.mxt.write: "true"`` alone means ``operator``. The
gateway's own API is in :data:`SYSTEM_RULES`. The platform (the
``X-Mxt-Platform-Token`` credential) may call every function, but not ``/system``:
deploying code is the admin's. docs/security.md has the table for the whole stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from bricks.errors import BadInput
from gateway.auth import Principal, Role

ACCESS_ANNOTATION = "com.mxt.access"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Level(IntEnum):
    """What a call needs: a role, or the platform itself (``INTERNAL``)."""

    PUBLIC = 0
    SCIENTIST = 1
    OPERATOR = 2
    ADMIN = 3
    INTERNAL = 4

    @classmethod
    def parse(cls, text: str) -> Level:
        """The level named ``text`` (``anonymous`` is ``public``)."""
        name = text.strip().lower()
        name = "public" if name == "anonymous" else name
        try:
            return cls[name.upper()]
        except KeyError:
            names = ", ".join(level.name.lower() for level in cls)
            raise BadInput(
                f"annotation {ACCESS_ANNOTATION}: unknown level {text!r} ({names})"
            ) from None

    @property
    def label(self) -> str:
        """The level as written in annotations and messages."""
        return self.name.lower()


@dataclass(frozen=True)
class Access:
    """The levels a function's reads and writes need."""

    read: Level
    write: Level

    def level(self, method: str) -> Level:
        """The level a call with ``method`` needs."""
        return self.read if method.upper() in READ_METHODS else self.write


INTERNAL = Access(Level.INTERNAL, Level.INTERNAL)


def parse_access(annotation: str | None, write_protected: bool = False) -> Access:
    """A function's :class:`Access` from ``com.mxt.access`` (and ``com.mxt.write``).

    Raises
    ------
    BadInput
        The annotation does not parse (the reason names it).
    """
    if annotation is None or not annotation.strip():
        return Access(Level.OPERATOR, Level.OPERATOR) if write_protected else INTERNAL
    if "=" not in annotation:
        level = Level.parse(annotation)
        return Access(level, level)
    parts: dict[str, Level] = {}
    for item in annotation.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("read", "write") or key in parts:
            raise BadInput(
                f"annotation {ACCESS_ANNOTATION}: {annotation!r} is not a level or "
                "'read=LEVEL, write=LEVEL'"
            )
        parts[key] = Level.parse(value)
    read = parts.get("read", Level.INTERNAL)
    return Access(read, parts.get("write", max(read, Level.OPERATOR)))


def has_control_character(path: str) -> bool:
    """Whether a decoded request path holds a control character (never a valid path)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)


def refusal(principal: Principal, level: Level) -> int | None:
    """``None`` when ``principal`` may make a call needing ``level``; else 401 or 403.

    401: the caller proved no identity and one would help; 403: the identity it
    proved is not enough (or the call is internal to the platform).
    """
    if principal.platform:
        return None
    if level is Level.INTERNAL:
        return 403 if principal.authenticated else 401
    if principal.role >= Role(level.value):
        return None
    return 403 if principal.authenticated else 401


def refusal_reason(status: int, level: Level, what: str) -> str:
    """The sentence of a refusal."""
    if level is Level.INTERNAL:
        return f"{what} is internal to the platform: no user may call it"
    if status == 401:
        return f"{what} needs a login with the role {level.label} or higher"
    return f"{what} needs the role {level.label} or higher"


#: the gateway's own API: (methods or None for any, path regex, level), first match wins
SYSTEM_RULES: tuple[tuple[frozenset[str] | None, re.Pattern[str], Level], ...] = (
    (None, re.compile(r"^/healthz$"), Level.PUBLIC),
    (frozenset({"GET", "HEAD"}), re.compile(r"^/async-function/status/[^/]+$"), Level.PUBLIC),
    (frozenset({"GET", "HEAD"}), re.compile(r"^/system/whoami$"), Level.SCIENTIST),
    (frozenset({"GET", "HEAD"}), re.compile(r"^/system/"), Level.OPERATOR),
    (frozenset({"POST"}), re.compile(r"^/system/dead-letters/[^/]+/redrive$"), Level.OPERATOR),
    (None, re.compile(r"^/system/"), Level.ADMIN),
)


def system_level(method: str, path: str) -> Level | None:
    """The level a call of the gateway's own API needs; ``None`` for other paths."""
    for methods, pattern, level in SYSTEM_RULES:
        if (methods is None or method in methods) and pattern.match(path):
            return level
    return None


def safe_subpath(path: str) -> str:
    """A function sub-path (after ``/function/NAME``) that cannot climb; ``BadInput`` else.

    Refused: ``.`` and ``..`` segments (also percent-encoded, once or twice), empty
    segments (``//``, a leading ``/`` included), backslashes, and control characters.
    Returned unchanged otherwise, so that the caller forwards exactly what was
    checked (URLs must then be built without normalisation).
    """
    from urllib.parse import unquote

    text = path
    if not text:
        return ""
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in text):
        raise BadInput("the sub-path has a control character or a backslash", field="path")
    for candidate in (text, unquote(text), unquote(unquote(text))):
        segments = candidate.split("/")
        # a trailing slash is allowed (the last segment may be empty), no other empty one
        if "" in segments[:-1] or any(s in (".", "..") for s in segments):
            raise BadInput(
                f"the sub-path {path!r} climbs or has empty segments ('..', '.', '//')",
                field="path",
            )
        if "\\" in candidate or any(ord(c) < 0x20 for c in candidate):
            raise BadInput("the sub-path has a control character or a backslash", field="path")
    return text
