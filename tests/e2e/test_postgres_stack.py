"""The same gateway with its control DB on PostgreSQL, as production runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from devstack.stack import PROVIDER_KEYS, Stack, StackPorts, new_secret

from .conftest import create_key


@pytest.fixture(scope="module")
def pg_stack(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("aig-pg")
    running = Stack(
        var_dir=var_dir,
        ports=StackPorts.free(),
        admin_token=new_secret("aig-admin-"),
        key_pepper=new_secret(""),
        database_url=postgres_url,
        env={key: "" for key in PROVIDER_KEYS},
    )
    running.start()
    yield running
    running.stop()


def test_keys_and_chat_on_postgres(pg_stack: Stack) -> None:
    with httpx.Client(
        base_url=f"{pg_stack.edge_url}/admin/v1",
        headers={"authorization": f"Bearer {pg_stack.admin_token}"},
        timeout=10,
    ) as admin:
        created = create_key(admin, "pg-account")
        client = openai.OpenAI(
            base_url=f"{pg_stack.edge_url}/v1", api_key=created["key"], max_retries=0
        )
        completion = client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello postgres"}]
        )
        assert "hello postgres" in (completion.choices[0].message.content or "")
        assert admin.delete(f"/keys/{created['id']}").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert httpx.get(f"{pg_stack.edge_url}/readyz").json()["checks"]["database"] is True
