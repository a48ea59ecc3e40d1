"""The edge reserves for the same route chain the router will try (Catalog.chain)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aig_common.errors import APIError
from catalog.estimate import prompt_size, worst_case_output_tokens
from catalog.live import LiveCatalog
from catalog.models import Catalog, load_catalog
from controldb import AuthenticatedKey
from controldb.money import Admission
from edge.admission import Admissions


class _Money:
    """Records the worst case admission was asked to reserve."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def admit(self, account_id: str, key_id: str, worst_case: int) -> Admission:
        self.asked.append(worst_case)
        return Admission("resv_1", worst_case, 0, datetime.now(UTC))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _worst(catalog: Catalog, body: dict[str, Any], model_ids: list[str]) -> int:
    size = prompt_size(body)
    costs = []
    for model_id in model_ids:
        model = catalog.chat(model_id)
        assert model is not None
        costs.append(
            model.worst_case_cost_nano_usd(
                size.tokens(model.image_input_tokens), worst_case_output_tokens(body, model)
            )
        )
    return max(costs)


async def _reserved(catalog: Catalog, body: dict[str, Any]) -> int:
    money = _Money()
    admissions = Admissions(LiveCatalog.fixed(catalog), money)  # type: ignore[arg-type]
    key = AuthenticatedKey(key_id="key_1", key_name="k", account_id="acct_1", account_name="a")
    await admissions.chat(key, body)
    return money.asked[0]


async def test_a_request_naming_its_fallbacks_reserves_for_those_not_the_catalogs(
    catalog: Catalog,
) -> None:
    # gpt-4o-mini's catalog chain ends in a cheap model; the request names a dear one instead.
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1000,
        "aig": {"fallbacks": ["claude-opus-4-6"]},
    }
    assert await _reserved(catalog, body) == _worst(
        catalog, body, ["gpt-4o-mini", "claude-opus-4-6"]
    )
    body["aig"] = {"fallbacks": False}
    assert await _reserved(catalog, body) == _worst(catalog, body, ["gpt-4o-mini"])


async def test_an_alias_reserves_as_its_model_and_unknown_fallbacks_are_refused(
    catalog: Catalog,
) -> None:
    body = {"model": "gemini-3-pro", "messages": [{"role": "user", "content": "hi"}]}
    via_alias = await _reserved(catalog, body)
    assert via_alias == await _reserved(catalog, {**body, "model": "gemini-3-pro-preview"})
    with pytest.raises(APIError) as refused:
        await _reserved(catalog, {**body, "aig": {"fallbacks": ["nope"]}})
    assert (refused.value.status, refused.value.code) == (400, "model_not_found")
    assert refused.value.param == "aig.fallbacks[0]"
