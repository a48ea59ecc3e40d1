"""Operations endpoints and request ids."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import Stack


def test_health_ready_metrics(stack: Stack, edge: httpx.Client) -> None:
    assert edge.get("/healthz").json() == {"status": "ok"}
    ready = edge.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "router": True}
    edge.get("/v1/models")
    metrics = edge.get("/metrics").text
    labels = {"route": "/v1/models", "model": "other", "provider": "none", "status": "200"}
    assert any(
        sample.name == "aig_edge_http_responses_total" and sample.labels == labels
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    )
    router_ops = f"http://127.0.0.1:{stack.ports.router_ops}"
    assert httpx.get(f"{router_ops}/healthz").status_code == 200
    assert "aig_router_upstream_calls_total" in httpx.get(f"{router_ops}/metrics").text


def test_an_idle_connection_stays_open_past_the_clients_own_expiry(stack: Stack) -> None:
    """httpx, and so the OpenAI SDK, drops a pooled connection idle for 5 s; the edge closed
    its own at 5 s too (uvicorn's default), so a client could send on a connection in the
    moment the edge closed it and read nothing back (httpx.ReadError, seen in
    bench.jobs_throughput). A connection idle for 6 s still answers now."""
    url = urlsplit(stack.edge_url)
    assert url.hostname is not None and url.port is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        for idle_s in (0, 6):
            time.sleep(idle_s)
            connection.request("GET", "/healthz")  # on the same socket: no reconnect
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b'{"status":"ok"}')
    finally:
        connection.close()


def test_every_response_has_a_request_id(edge: httpx.Client) -> None:
    ids = {edge.get("/v1/models").headers["x-request-id"] for _ in range(3)}
    ids.add(edge.get("/nowhere").headers["x-request-id"])
    assert len(ids) == 4


def test_the_edge_does_not_name_its_server_software(edge: httpx.Client) -> None:
    for response in (edge.get("/v1/models"), edge.post("/v1/chat/completions", json={})):
        assert "server" not in response.headers
        assert "date" in response.headers  # the other header the server adds is kept


def test_no_other_service_names_its_server_software(stack: Stack) -> None:
    ports = stack.ports
    responses = [
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        for port in (ports.router_ops, ports.billing, ports.jobs, ports.webhooks)
    ]
    # jobs' provider callbacks are the one endpoint besides the edge reachable from outside.
    responses.append(
        httpx.post(f"http://127.0.0.1:{ports.jobs}/callbacks/kie/task_none", json={}, timeout=10)
    )
    for response in responses:
        assert response.status_code < 500
        assert "server" not in response.headers, response.url
        assert "date" in response.headers


def test_billing_internal_api_requires_the_service_token(stack: Stack) -> None:
    billing = f"http://127.0.0.1:{stack.ports.billing}"
    params = {
        "account_id": "acc_any",
        "start": "2000-01-01T00:00:00+00:00",
        "end": "2100-01-01T00:00:00+00:00",
    }
    anonymous = httpx.get(f"{billing}/internal/v1/usage", params=params, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "service_token_required"
    forged = httpx.post(
        f"{billing}/internal/v1/tiers/recompute",
        headers={"authorization": "Bearer not-the-token"},
        timeout=10,
    )
    assert forged.status_code == 401
    served = httpx.get(
        f"{billing}/internal/v1/usage",
        params=params,
        headers={"authorization": f"Bearer {stack.service_token}"},
        timeout=30,
    )
    assert served.status_code == 200, served.text
    assert served.json()["data"] == []
    # Probes stay open: Kubernetes calls them without credentials.
    assert httpx.get(f"{billing}/healthz", timeout=10).status_code == 200
