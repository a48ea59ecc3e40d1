"""The S3 result store against a real S3-compatible server: SeaweedFS's `weed`, built from the
Go module proxy by scripts/install_seaweedfs.sh (no Docker, no network beyond the proxy).

A missing `weed` fails the run instead of skipping: a skipped S3 suite looks like a green one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.lifetime import die_with_parent_preexec
from devstack.processes import free_port
from jobs.storage import ObjectNotFound, S3ResultStore, store_from_env

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install_seaweedfs.sh"
BUCKET = "aig-results"
# SeaweedFS's S3 gateway checks signatures only once identities are configured; boto3 signs
# anyway, so any pair works.
ACCESS_KEY, SECRET_KEY = "aig-test", "aig-test-secret"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    weed = subprocess.run([str(INSTALL)], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="aig-weed-") as directory:
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        log = (Path(directory) / "weed.log").open("wb")
        process = subprocess.Popen(
            [
                weed,
                "server",
                f"-dir={directory}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={ports['master']}",
                f"-master.port.grpc={grpc['master']}",
                f"-volume.port={ports['volume']}",
                f"-volume.port.grpc={grpc['volume']}",
                "-filer",
                f"-filer.port={ports['filer']}",
                f"-filer.port.grpc={grpc['filer']}",
                "-s3",
                f"-s3.port={ports['s3']}",
                f"-s3.port.grpc={grpc['s3']}",
                "-volume.max=4",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Dies with the test run even if the run is killed before the fixture's cleanup.
            preexec_fn=die_with_parent_preexec(os.getpid()),
        )
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        try:
            client = _client(endpoint)
            deadline = time.monotonic() + 90
            while True:
                try:
                    client.create_bucket(Bucket=BUCKET)
                    break
                except Exception:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "weed's S3 gateway did not start:\n"
                            + (Path(directory) / "weed.log").read_text(errors="replace")[-3000:]
                        ) from None
                    time.sleep(0.5)
            yield endpoint
        finally:
            process.terminate()
            try:
                # weed's graceful stop waits on its own peers for 15 s or more; its data is
                # a throwaway directory, so it gets 2 s before the kill.
                process.wait(2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def _store(endpoint: str, prefix: str) -> S3ResultStore:
    store = store_from_env(
        {
            "AIG_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
            "AIG_S3_ENDPOINT_URL": endpoint,
            "AIG_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "AIG_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }
    )
    assert isinstance(store, S3ResultStore)
    return store


async def test_results_round_trip_through_a_real_s3_server(s3_endpoint: str) -> None:
    store = _store(s3_endpoint, "results/")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    await store.put("task_1/0.png", png, "image/png")
    stored = await store.get("task_1/0.png")
    assert stored.data == png and stored.content_type == "image/png"
    # The object sits under the configured prefix, as another S3 client sees it.
    listed = _client(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="results/")
    assert [item["Key"] for item in listed["Contents"]] == ["results/task_1/0.png"]
    # Overwrite replaces; a missing key is ObjectNotFound (404 at the edge), not an error.
    await store.put("task_1/0.png", b"RIFF....WAVE", "audio/wav")
    again = await store.get("task_1/0.png")
    assert (again.data, again.content_type) == (b"RIFF....WAVE", "audio/wav")
    with pytest.raises(ObjectNotFound):
        await store.get("task_1/missing.png")
    assert await store.exists("task_1/0.png") and not await store.exists("task_1/missing.png")
    await store.delete("task_1/0.png")
    assert not await store.exists("task_1/0.png")
    # A store with another prefix does not see it.
    with pytest.raises(ObjectNotFound):
        await _store(s3_endpoint, "other/").get("task_1/0.png")
