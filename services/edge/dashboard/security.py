"""Passwords, signed links, CSRF tokens and rate limits for the dashboard's forms."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
# The handful of passwords every credential-stuffing list starts with.
COMMON_PASSWORDS = frozenset(
    {
        "password123",
        "password1234",
        "1234567890",
        "12345678910",
        "qwertyuiop",
        "iloveyou123",
        "letmein1234",
        "administrator",
        "passw0rd123",
        "0123456789",
        "1111111111",
        "abcdefghij",
    }
)

_hasher = PasswordHasher()
# Verified against when the address is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not a real password; only spends the same time")


def password_problem(password: str, email: str) -> str | None:
    """Why a new password is refused, in words for the form, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Use at most {MAX_PASSWORD_LENGTH} characters."
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(lowered)) < 4:
        return "That password is too easy to guess; pick a less common one."
    if email and lowered in (email.lower(), email.lower().split("@")[0]):
        return "Your password must not be your email address."
    return None


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU on purpose: off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def check_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Signer:
    """HMAC-SHA256 over a purpose, a payload and an expiry: links that cannot be forged,
    reused for another purpose, or used after they expire."""

    secret: bytes
    clock: Callable[[], float] = time.time

    def sign(self, purpose: str, payload: dict[str, str], lifetime_s: int) -> str:
        body = orjson.dumps({"p": purpose, "e": int(self.clock()) + lifetime_s, **payload})
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def unsign(self, purpose: str, token: str) -> dict[str, str] | None:
        body_text, _, mac_text = token.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
            fields = orjson.loads(body)
        except (ValueError, orjson.JSONDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(body)) or not isinstance(fields, dict):
            return None
        if fields.get("p") != purpose or int(fields.get("e", 0)) < self.clock():
            return None
        return {k: str(v) for k, v in fields.items() if k not in ("p", "e")}

    def csrf_token(self, binding: str) -> str:
        """The form token of one browser: bound to its session (or pre-session) cookie."""
        return _b64(self._mac(b"csrf\x00" + binding.encode()))

    def csrf_ok(self, binding: str, presented: str) -> bool:
        return bool(binding) and hmac.compare_digest(self.csrf_token(binding), presented)

    def _mac(self, data: bytes) -> bytes:
        return hmac.digest(self.secret, data, hashlib.sha256)


def fingerprint(password_hash: str) -> str:
    """Changes whenever the password does: a reset link dies once it has been used."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class RateLimiter:
    """At most `limit` events per `window_s` seconds for each key (an address, an IP).

    In process: with several edge replicas each allows its own share; the limits are set
    low enough that even that share stops guessing and mail flooding.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self._window_s:
            events.popleft()
        if len(events) >= self._limit:
            return False
        events.append(now)
        if len(self._events) > 100_000:
            self._forget_idle(now)
        return True

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._events.items() if not v or v[-1] <= now - self._window_s]:
            del self._events[key]
