"""Where finished results live: aig's own copy of each file a provider rendered.

Provider result URLs expire within hours (Replicate deletes files after 1 h), so the jobs
service copies every result into a `ResultStore` and clients fetch it from aig through
expiring signed URLs (`sign_result_url` / `verify_result_signature`), served by the edge.

Two backends, chosen by `AIG_STORAGE_URL`:

- unset or `file:///abs/dir` (or `file:rel/dir`): a local directory, `var/results` by default;
- `s3://bucket[/prefix]`: any S3-compatible store (AWS S3, SeaweedFS, MinIO, R2), with
  `AIG_S3_ENDPOINT_URL` (empty for AWS), `AIG_S3_REGION` and the credentials in
  `AIG_S3_ACCESS_KEY_ID` / `AIG_S3_SECRET_ACCESS_KEY` (else boto's usual AWS_* chain).

Keys are relative paths of safe segments (`task_01J.../0.png`); the store never builds a
path or object name from anything else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

DEFAULT_LOCAL_ROOT = "var/results"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_KEY_LENGTH = 512
_DEFAULT_CONTENT_TYPE = "application/octet-stream"


class StorageError(Exception):
    """The store could not be read or written (a misconfiguration or an outage)."""


class ObjectNotFound(StorageError, KeyError):
    """No object is stored under this key."""


class InvalidKey(StorageError, ValueError):
    """The key is not a relative path of safe segments."""


def check_key(key: str) -> str:
    """Returns `key` if it is safe to use as a file path and an object name; else raises."""
    if not key or len(key) > _MAX_KEY_LENGTH:
        raise InvalidKey(f"a result key must be 1..{_MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        # The first character may not be a dot: no "..", no hidden files.
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(f"result key {key!r} has an unsafe segment {segment!r}")
    return key


@dataclass(frozen=True, slots=True)
class StoredObject:
    data: bytes
    content_type: str


class ResultStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Stores `data` under `key`, replacing what was there (so a retried copy is safe)."""
        ...

    async def get(self, key: str) -> StoredObject:
        """The object under `key`; raises `ObjectNotFound`."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Removes the object; deleting a missing key is not an error."""
        ...


class LocalResultStore:
    """Results as files under `root`: `objects/<key>` and its content type in `types/<key>`.

    Writes go to a temporary file that is renamed into place, so a reader never sees half
    a file and a crash mid-copy leaves the previous state (or nothing) behind.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        check_key(key)
        return self.root / "objects" / key, self.root / "types" / key

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        data_path, type_path = self._paths(key)
        await asyncio.to_thread(self._put, data_path, type_path, data, content_type)

    @staticmethod
    def _put(data_path: Path, type_path: Path, data: bytes, content_type: str) -> None:
        # The type goes first: a data file is only ever visible with its type beside it.
        _write_atomically(type_path, content_type.encode())
        _write_atomically(data_path, data)

    async def get(self, key: str) -> StoredObject:
        data_path, type_path = self._paths(key)
        return await asyncio.to_thread(self._get, key, data_path, type_path)

    @staticmethod
    def _get(key: str, data_path: Path, type_path: Path) -> StoredObject:
        try:
            data = data_path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            content_type = type_path.read_text().strip() or _DEFAULT_CONTENT_TYPE
        except FileNotFoundError:
            content_type = _DEFAULT_CONTENT_TYPE
        return StoredObject(data, content_type)

    async def exists(self, key: str) -> bool:
        data_path, _type_path = self._paths(key)
        return await asyncio.to_thread(data_path.is_file)

    async def delete(self, key: str) -> None:
        data_path, type_path = self._paths(key)
        await asyncio.to_thread(self._delete, data_path, type_path)

    @staticmethod
    def _delete(data_path: Path, type_path: Path) -> None:
        data_path.unlink(missing_ok=True)
        type_path.unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class S3Settings:
    bucket: str
    prefix: str = ""  # object names are prefix + key
    endpoint_url: str | None = None  # None: AWS itself
    region: str = "us-east-1"
    access_key_id: str | None = None  # None: boto's own chain (AWS_* env, profiles, roles)
    secret_access_key: str | None = None


class S3ResultStore:
    """Results in an S3-compatible bucket through boto3.

    boto3's client is thread-safe, so each call runs in a worker thread rather than
    blocking the event loop; this keeps one well-known client library instead of an async
    wrapper that pins botocore's exact version.
    """

    def __init__(self, settings: S3Settings, client: Any | None = None) -> None:
        self.settings = settings
        self._client = client if client is not None else _s3_client(settings)

    def _name(self, key: str) -> str:
        return self.settings.prefix + check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        name = self._name(key)
        await self._call(
            "put_object",
            Bucket=self.settings.bucket,
            Key=name,
            Body=data,
            ContentType=content_type,
        )

    async def get(self, key: str) -> StoredObject:
        name = self._name(key)

        def read() -> StoredObject:
            response = self._client.get_object(Bucket=self.settings.bucket, Key=name)
            with response["Body"] as body:
                data = body.read()
            return StoredObject(data, response.get("ContentType") or _DEFAULT_CONTENT_TYPE)

        try:
            return await asyncio.to_thread(read)
        except Exception as exc:
            if _is_missing(exc):
                raise ObjectNotFound(key) from None
            raise StorageError(f"S3 get of {key!r} failed: {_describe(exc)}") from exc

    async def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            await asyncio.to_thread(self._client.head_object, Bucket=self.settings.bucket, Key=name)
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise StorageError(f"S3 head of {key!r} failed: {_describe(exc)}") from exc
        return True

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Bucket=self.settings.bucket, Key=self._name(key))

    async def ensure_bucket(self) -> None:
        """Creates the bucket when it does not exist (for development stacks and tests;
        production buckets are made by the operator, with their own policies)."""
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.settings.bucket)
            return
        except Exception as exc:
            if not _is_missing(exc):
                raise StorageError(f"S3 bucket check failed: {_describe(exc)}") from exc
        await self._call("create_bucket", Bucket=self.settings.bucket)

    async def _call(self, operation: str, **arguments: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._client, operation), **arguments)
        except Exception as exc:
            raise StorageError(f"S3 {operation} failed: {_describe(exc)}") from exc


def _s3_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        config=Config(
            signature_version="s3v4",
            # Path-style addressing works with every S3-compatible server (virtual hosts
            # need DNS for each bucket); AWS still accepts it.
            s3={"addressing_style": "path"},
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _describe(exc: Exception) -> str:
    # botocore's messages carry the operation and error code, never the credentials.
    return f"{type(exc).__name__}: {exc}"


def store_from_env(environ: Mapping[str, str] | None = None) -> LocalResultStore | S3ResultStore:
    """The result store that `AIG_STORAGE_URL` names (a local directory when unset)."""
    env = os.environ if environ is None else environ
    url = env.get("AIG_STORAGE_URL", "").strip()
    if not url:
        return LocalResultStore(DEFAULT_LOCAL_ROOT)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("AIG_STORAGE_URL file:// URLs name a local path (file:///dir)")
        path = unquote(parts.path)
        if not path:
            raise ValueError("AIG_STORAGE_URL file: URL has no path")
        return LocalResultStore(path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("AIG_STORAGE_URL s3:// URLs name a bucket (s3://bucket/prefix)")
        prefix = parts.path.strip("/")
        return S3ResultStore(
            S3Settings(
                bucket=parts.netloc,
                prefix=f"{prefix}/" if prefix else "",
                endpoint_url=env.get("AIG_S3_ENDPOINT_URL") or None,
                region=env.get("AIG_S3_REGION") or "us-east-1",
                access_key_id=env.get("AIG_S3_ACCESS_KEY_ID") or None,
                secret_access_key=env.get("AIG_S3_SECRET_ACCESS_KEY") or None,
            )
        )
    raise ValueError(f"AIG_STORAGE_URL must be file:///dir or s3://bucket, not {parts.scheme}:")


# --- expiring signed URLs -------------------------------------------------------------

RESULT_PATH_PREFIX = "/v1/jobs/results/"


class ResultUrlRejected(Exception):
    """A result URL's signature is wrong or it has expired."""


class ResultUrlExpired(ResultUrlRejected):
    pass


class ResultUrlForged(ResultUrlRejected):
    pass


def result_signature(secret: bytes, key: str, expires_at: int) -> str:
    """HMAC-SHA256 over the key and the expiry (Unix seconds), base64url without padding.

    The newline cannot occur in a key, so no (key, expiry) pair signs like another.
    """
    if not secret:
        raise ValueError("the result URL secret is empty")
    message = f"{check_key(key)}\n{expires_at}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_result_url(
    public_base_url: str, key: str, *, secret: bytes, now: float, ttl_s: int
) -> str:
    """`{public_base_url}/v1/jobs/results/{key}?expires=…&signature=…`, valid for `ttl_s`."""
    expires_at = int(now) + ttl_s
    signature = result_signature(secret, key, expires_at)
    path = RESULT_PATH_PREFIX + quote(key, safe="/")
    return f"{public_base_url.rstrip('/')}{path}?expires={expires_at}&signature={signature}"


def verify_result_signature(
    key: str, expires: str | int, signature: str, *, secret: bytes, now: float
) -> None:
    """Raises `ResultUrlForged` or `ResultUrlExpired` unless the URL is genuine and current.

    The signature is checked first (constant-time), so an attacker learns nothing about
    expiry from a forged URL.
    """
    try:
        expires_at = int(expires)
        expected = result_signature(secret, key, expires_at)
    except (ValueError, InvalidKey):
        raise ResultUrlForged("malformed result URL") from None
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise ResultUrlForged("result URL signature does not match")
    if now >= expires_at:
        raise ResultUrlExpired("result URL has expired")


def result_url_secret_from_env(environ: Mapping[str, str] | None = None) -> bytes:
    """`AIG_RESULT_URL_SECRET`: shared by whoever signs result URLs and the edge that
    verifies them; at least 32 characters so it cannot be guessed."""
    env = os.environ if environ is None else environ
    secret = env.get("AIG_RESULT_URL_SECRET", "")
    if len(secret) < 32:
        raise ValueError("AIG_RESULT_URL_SECRET must be set to at least 32 characters")
    return secret.encode()
