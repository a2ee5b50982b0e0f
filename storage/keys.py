"""Validation of bucket names, object keys and user metadata.

Keys follow S3's rules plus ours: they must be safe as relative paths on a local
file system and in URLs, so a hostile key can never escape a bucket.
"""

from __future__ import annotations

import re

from bricks.errors import BadInput

#: the buckets of the system, created on start
BUCKETS: tuple[str, ...] = ("raw", "products", "caldb", "logs")
MAX_KEY_BYTES = 1024
#: S3 limits user metadata to 2 KB in total
MAX_METADATA_BYTES = 2048
_METADATA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is one of the system's buckets.

    Raises
    ------
    NotFound
        For any other name (the valid names are in the message).
    """
    if bucket not in BUCKETS:
        from bricks.errors import NotFound

        raise NotFound(f"unknown bucket {bucket!r}; valid buckets: {', '.join(BUCKETS)}")
    return bucket


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise BadInput naming the problem.

    Parameters
    ----------
    key
        Object key: ``/``-separated segments, at most 1024 bytes in UTF-8.
    """
    if not isinstance(key, str):
        raise BadInput(f"object key must be a string, not {type(key).__name__}")
    problem = _key_problem(key)
    if problem:
        raise BadInput(f"invalid object key {key!r}: {problem}", key=key)
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "empty key"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes in UTF-8"
    if key.startswith("/"):
        return "leading '/' (keys are relative)"
    if "\\" in key:
        return "backslash not allowed"
    if _CONTROL.search(key):
        return "control character not allowed"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    for segment in key.split("/"):
        if segment == "":
            return "empty segment ('//' or trailing '/')"
        if segment in (".", ".."):
            return f"'{segment}' segment not allowed"
    return None


def validate_prefix(prefix: str) -> str:
    """Return a listing prefix if it is empty or a safe key prefix (may end with ``/``)."""
    if prefix:
        validate_key(prefix.rstrip("/") or "/")
    return prefix


def validate_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Return user metadata if names are lower-case tokens and values printable ASCII.

    S3 carries user metadata in HTTP headers, so only what survives a header is allowed.
    """
    metadata = dict(metadata or {})
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _METADATA_NAME.match(name):
            raise BadInput(
                f"invalid metadata name {name!r}: lower-case letters, digits, '-' and '_' only"
            )
        if not isinstance(value, str) or not value.isascii() or _CONTROL.search(value):
            raise BadInput(f"invalid metadata value for {name!r}: printable ASCII only")
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise BadInput(f"metadata larger than {MAX_METADATA_BYTES} bytes")
    return metadata
