"""Result URLs: aig's stored results, signed into expiring links on the public URL.

Both the edge (recordInfo, at every read) and the jobs service (the record inside each
`TaskEvent`, which webhooks POSTs) sign with the same secret, so a callback's links and a
poll's links are equally valid; each is valid for `AIG_RESULT_URL_TTL_S` from signing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aig_common.public_url import public_url_from_env

from .storage import (
    RESULT_PATH_PREFIX,
    ResultStore,
    StoredObject,
    result_url_secret_from_env,
    sign_result_url,
    store_from_env,
    verify_result_signature,
)

DEFAULT_TTL_S = 24 * 3600  # as long as Kie keeps its result URLs


@dataclass(frozen=True)
class ResultLinks:
    store: ResultStore
    public_url: str
    secret: bytes
    ttl_s: int = DEFAULT_TTL_S
    path_prefix: str = RESULT_PATH_PREFIX

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ResultLinks:
        return cls(
            store=store_from_env(env),
            public_url=public_url_from_env(env),
            secret=result_url_secret_from_env(env),
            ttl_s=int(env.get("AIG_RESULT_URL_TTL_S", str(DEFAULT_TTL_S))),
        )

    def sign_all(self, keys: Sequence[str], now: float) -> list[str]:
        return [
            sign_result_url(self.public_url, key, secret=self.secret, now=now, ttl_s=self.ttl_s)
            for key in keys
        ]

    async def fetch(self, key: str, expires: str, signature: str, now: float) -> StoredObject:
        """The stored object behind a signed URL; raises the storage module's
        `ResultUrlRejected` or `ObjectNotFound`."""
        verify_result_signature(key, expires, signature, secret=self.secret, now=now)
        return await self.store.get(key)
