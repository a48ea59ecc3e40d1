"""Throttling of failed authentication: guessing keys or the admin token gets slow, fast.

Each *subject* (a client address, the public prefix of a presented key) owns a token bucket
of failures: `burst` failures are free, then one more every `60 / per_minute` seconds. While a
subject's bucket is empty every request it makes is answered 429 with `retry-after` *before*
the credential is checked, so a brute-force loop costs the edge almost nothing and learns
nothing. Successful requests never spend tokens, so a client with a valid key is not slowed
by its neighbours' typos unless they share its address and keep failing.

The state is per edge process (replicas each allow their own burst): the point is to make
guessing slower than useful, not to count exactly.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from aig_common.errors import APIError

# Enough to tell keys apart for throttling without keeping any of their secret part.
KEY_PREFIX_CHARS = 14


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class FailedAuthThrottle:
    def __init__(
        self,
        *,
        burst: int = 20,
        per_minute: float = 30.0,
        max_subjects: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_minute <= 0:
            raise ValueError("burst must be >= 1 and per_minute > 0")
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._max_subjects = max_subjects
        self._clock = clock
        # Least recently failed first, so the oldest subjects are forgotten first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, subject: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(subject)
        if bucket is None:
            return None
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= self._burst:
            del self._buckets[subject]  # full again: nothing worth remembering
            return None
        return bucket

    def retry_after_s(self, subjects: tuple[str, ...]) -> int:
        """0 when every subject may try; otherwise whole seconds until all may."""
        now = self._clock()
        wait = 0.0
        for subject in subjects:
            bucket = self._refilled(subject, now)
            if bucket is not None and bucket.tokens < 1:
                wait = max(wait, (1 - bucket.tokens) / self._rate)
        return math.ceil(wait) if wait > 0 else 0

    def record_failure(self, subjects: tuple[str, ...]) -> None:
        now = self._clock()
        for subject in subjects:
            bucket = self._refilled(subject, now)
            if bucket is None:
                bucket = self._buckets[subject] = _Bucket(self._burst, now)
            bucket.tokens = max(0.0, bucket.tokens - 1)
            self._buckets.move_to_end(subject)
        while len(self._buckets) > self._max_subjects:
            self._buckets.popitem(last=False)


def client_address(request: Request) -> str:
    # Behind a proxy uvicorn has already replaced this with the forwarded address when the
    # proxy is trusted (FORWARDED_ALLOW_IPS); otherwise it is the peer itself.
    return request.client.host if request.client else "unknown"


def auth_subjects(request: Request, token: str = "", realm: str = "key") -> tuple[str, ...]:
    subjects = [f"{realm}-ip:{client_address(request)}"]
    if token.startswith("sk-aig-"):
        subjects.append(f"{realm}-prefix:{token[:KEY_PREFIX_CHARS]}")
    return tuple(subjects)


def throttle_of(request: Request) -> FailedAuthThrottle | None:
    return getattr(request.app.state, "auth_throttle", None)


def refuse_if_throttled(request: Request, subjects: tuple[str, ...]) -> None:
    throttle = throttle_of(request)
    if throttle is None:
        return
    wait = throttle.retry_after_s(subjects)
    if wait:
        raise APIError(
            429,
            f"Too many failed authentication attempts from this client; retry in {wait} s.",
            code="too_many_failed_auth",
            error_type="rate_limit_error",
            headers={"retry-after": str(wait)},
        )


def record_failure(request: Request, subjects: tuple[str, ...]) -> None:
    throttle = throttle_of(request)
    if throttle is not None:
        throttle.record_failure(subjects)
