"""Reloading the catalog: a valid file takes over, an invalid one is refused."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from aig_common.errors import APIError
from catalog.live import LiveCatalog
from catalog.models import DEFAULT_CATALOG_PATH, Catalog, load_catalog
from controldb.money import Money
from edge.admission import Admissions
from router.chat import ChatService
from router.config import RouterConfig
from router.upstream import UpstreamClients


def _copy(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    document = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text())
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, document


def _build(catalog: Catalog) -> RouterConfig:
    return RouterConfig.build(catalog, {}, "http://127.0.0.1:1")


def test_a_valid_edit_takes_over_and_an_invalid_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, document = _copy(tmp_path)
    live = LiveCatalog(_build, path)
    assert not live.reload_if_changed()  # nothing changed
    first = live.current

    document["chat_models"][0]["aliases"] = ["brand-new-name"]
    path.write_text(yaml.safe_dump(document))
    assert live.reload_if_changed()
    assert live.current.catalog.chat("brand-new-name") is not None
    assert live.version == 2 and live.current is not first

    # A row the provider types refuse is caught by the router's build, not only the parser.
    document["providers"].append({"name": "x", "type": "bedrock", "base_url": "https://x.example"})
    path.write_text(yaml.safe_dump(document))
    with caplog.at_level(logging.ERROR, logger="catalog"):
        assert not live.reload_if_changed()
    assert "catalog reload refused" in caplog.text and "unknown type 'bedrock'" in caplog.text
    assert live.current.catalog.chat("brand-new-name") is not None and live.version == 2


async def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    path, document = _copy(tmp_path)
    live = LiveCatalog(_build, path)
    watcher = asyncio.create_task(live.watch(poll_s=3600))
    try:
        await asyncio.sleep(0.05)
        # Never send the signal unhandled: its default action would end the test run.
        assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL
        document["chat_models"][0]["aliases"] = ["after-hangup"]
        path.write_text(yaml.safe_dump(document))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if live.version == 2:
                break
            await asyncio.sleep(0.02)
        assert live.current.catalog.chat("after-hangup") is not None
    finally:
        watcher.cancel()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def test_a_name_added_since_the_last_poll_is_found_by_the_edge_and_the_router(
    tmp_path: Path,
) -> None:
    """The edge and the router poll the file on their own: without a look at the file on a
    miss, a call naming a new alias could pass one and be a 404 at the other (seen in CI)."""
    path, document = _copy(tmp_path)
    router_catalog = LiveCatalog(_build, path)
    edge_catalog = LiveCatalog(lambda catalog: catalog, path)
    router = ChatService(router_catalog, cast(UpstreamClients, None))
    edge = Admissions(edge_catalog, cast(Money, None))
    canonical = document["chat_models"][0]["id"]
    document["chat_models"][0]["aliases"] = ["just-added"]
    path.write_text(yaml.safe_dump(document))
    body = {"model": "just-added", "messages": [{"role": "user", "content": "Hi"}]}

    # Neither has polled since the edit.
    assert edge.chat_model("just-added").id == canonical
    assert router.plan(body).targets[0].public_id == canonical
    assert edge_catalog.version == router_catalog.version == 2

    # A name in neither file is still a 404, and nothing is loaded again for it.
    with pytest.raises(APIError) as refused:
        router.plan(body | {"model": "nowhere"})
    assert refused.value.status == 404
    with pytest.raises(APIError):
        edge.chat_model("nowhere")
    assert edge_catalog.version == router_catalog.version == 2


def test_a_fixed_catalog_answers_a_miss_without_loading_anything() -> None:
    live = LiveCatalog.fixed(load_catalog())
    assert live.find(lambda catalog: catalog.chat("nowhere")) == (live.current, None)
    assert not live.reload_if_changed() and live.version == 1
