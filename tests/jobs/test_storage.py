"""The result store's local backend and the signed result URLs (S3: test_storage_s3.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from jobs.storage import (
    InvalidKey,
    LocalResultStore,
    ObjectNotFound,
    ResultUrlExpired,
    ResultUrlForged,
    S3ResultStore,
    result_url_secret_from_env,
    sign_result_url,
    store_from_env,
    verify_result_signature,
)

SECRET = b"s" * 32


def _partial_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".partial-")]


def _exists(path: Path) -> bool:
    return path.exists()


async def test_local_store_round_trip_overwrite_and_delete(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path)
    key = "task_01/0.png"
    assert not await store.exists(key)
    with pytest.raises(ObjectNotFound):
        await store.get(key)

    await store.put(key, b"\x89PNG first", "image/png")
    await store.put(key, b"\x89PNG second", "image/png")  # a retried copy replaces the first
    stored = await store.get(key)
    assert (stored.data, stored.content_type) == (b"\x89PNG second", "image/png")
    assert await store.exists(key)
    assert not _partial_files(tmp_path)

    await store.delete(key)
    await store.delete(key)  # deleting twice is fine
    assert not await store.exists(key)


@pytest.mark.parametrize(
    "key",
    ["", "../escape.png", "/etc/passwd", "a//b", "a/../b", ".hidden", "a\nb", "ab\n", "x" * 600],
)
async def test_unsafe_keys_are_refused_before_touching_disk(tmp_path: Path, key: str) -> None:
    store = LocalResultStore(tmp_path / "root")
    with pytest.raises(InvalidKey):
        await store.put(key, b"data", "text/plain")
    assert not _exists(tmp_path / "root")


def test_store_from_env_picks_the_backend(tmp_path: Path) -> None:
    default = store_from_env({})
    assert isinstance(default, LocalResultStore) and default.root == Path("var/results")
    local = store_from_env({"AIG_STORAGE_URL": f"file://{tmp_path}"})
    assert isinstance(local, LocalResultStore) and local.root == tmp_path
    s3 = store_from_env(
        {
            "AIG_STORAGE_URL": "s3://media/results/",
            "AIG_S3_ENDPOINT_URL": "http://127.0.0.1:1",
            "AIG_S3_ACCESS_KEY_ID": "id",
            "AIG_S3_SECRET_ACCESS_KEY": "secret",
        }
    )
    assert isinstance(s3, S3ResultStore)
    assert (s3.settings.bucket, s3.settings.prefix) == ("media", "results/")
    assert s3.settings.endpoint_url == "http://127.0.0.1:1"
    for bad in ("ftp://host/x", "s3:///nobucket", "file://otherhost/x"):
        with pytest.raises(ValueError):
            store_from_env({"AIG_STORAGE_URL": bad})


def _split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    key = parts.path.removeprefix("/v1/jobs/results/")
    return key, query["expires"][0], query["signature"][0]


def test_signed_url_verifies_until_it_expires() -> None:
    url = sign_result_url(
        "https://aig.example/", "task_01/0.mp4", secret=SECRET, now=1_000, ttl_s=60
    )
    assert url.startswith("https://aig.example/v1/jobs/results/task_01/0.mp4?expires=1060&")
    key, expires, signature = _split(url)
    verify_result_signature(key, expires, signature, secret=SECRET, now=1_059)
    with pytest.raises(ResultUrlExpired):
        verify_result_signature(key, expires, signature, secret=SECRET, now=1_060)


def test_tampered_or_foreign_urls_are_forged() -> None:
    url = sign_result_url("http://x", "task_01/0.png", secret=SECRET, now=1_000, ttl_s=60)
    key, expires, signature = _split(url)
    forged = [
        ("task_02/0.png", expires, signature),  # another task's file
        (key, str(int(expires) + 3600), signature),  # a longer life
        (key, expires, signature[:-1] + ("A" if signature[-1] != "A" else "B")),
        (key, "soon", signature),
        ("../0.png", expires, signature),
    ]
    for forged_key, forged_expires, forged_signature in forged:
        with pytest.raises(ResultUrlForged):
            verify_result_signature(
                forged_key, forged_expires, forged_signature, secret=SECRET, now=1_000
            )
    with pytest.raises(ResultUrlForged):  # signed with another secret
        verify_result_signature(key, expires, signature, secret=b"t" * 32, now=1_000)


def test_the_secret_must_be_long_enough() -> None:
    assert result_url_secret_from_env({"AIG_RESULT_URL_SECRET": "k" * 32}) == b"k" * 32
    with pytest.raises(ValueError):
        result_url_secret_from_env({"AIG_RESULT_URL_SECRET": "short"})
    with pytest.raises(ValueError):
        result_url_secret_from_env({})
