"""Failures no handler expects still answer in OpenAI's error shape, with the right status."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, OperationalError

from edge.http import install_error_handlers


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    async def fail() -> None:
        raise error

    app.add_api_route("/fail", fail, methods=["GET"])
    return app


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")),
    ],
)
def test_a_busy_database_is_a_retryable_503(error: Exception) -> None:
    response = TestClient(_app(error), raise_server_exceptions=False).get("/fail")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["error"]["code"] == "database_unavailable"
    assert "locked" not in body["error"]["message"]  # driver text stays out


def test_an_unexpected_error_is_an_openai_shaped_500() -> None:
    app = _app(RuntimeError("secret detail sk-aig-abc"))
    response = TestClient(app, raise_server_exceptions=False).get("/fail")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text


class _DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_a_nul_postgresql_refuses_is_a_400_and_other_refusals_stay_500() -> None:
    nul = DBAPIError("INSERT", {}, _DriverError("invalid byte sequence: 0x00", "22021"))
    response = TestClient(_app(nul), raise_server_exceptions=False).get("/fail")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_text"
    other = DBAPIError("INSERT", {}, _DriverError("duplicate key", "23505"))
    response = TestClient(_app(other), raise_server_exceptions=False).get("/fail")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
