"""Per-caller rate limits of the public async API: one token bucket per caller.

A caller is a user name, or the client's address for an anonymous caller; the
platform is never limited (``gateway.api``). A bucket holds up to ``burst`` tokens and
refills at ``rate`` tokens a second; a call takes one, and without one the caller gets
429 with ``Retry-After`` (the seconds until a token is back).
"""

from __future__ import annotations

import math
import time

#: buckets kept before the full ones (callers idle long enough) are forgotten
PRUNE_ABOVE = 10_000


class RateLimiter:
    """Token buckets by caller key.

    Parameters
    ----------
    rate
        Tokens a second each bucket gains; 0 disables the limit.
    burst
        Tokens a bucket holds at most (and starts with).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token of ``key``'s bucket: 0.0 when taken, else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            if len(self.buckets) > PRUNE_ABOVE:
                self._prune(now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        refill = self.burst / self.rate
        self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < refill}


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
