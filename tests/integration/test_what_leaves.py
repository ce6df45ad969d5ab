"""What leaves the router: a 502 names neither the backend's URL nor its reply (the log keeps
them), against a real serve-router process and a fake model server."""

from __future__ import annotations

import httpx

from tests.fakes import chat, fake_model_server
from tests.processes import stop
from tests.routers import start_router_at_defaults as start_router


def test_a_502_names_the_failed_model_but_not_its_url(tmp_path):
    log = tmp_path / "router.log"
    with fake_model_server(fail_model="large") as server, log.open("w") as stderr:
        router, url = start_router(server.url, stderr=stderr)
        try:
            reply = httpx.post(f"{url}/chat/completions", json=chat(), timeout=600)
        finally:
            stop(router)
    assert reply.status_code == 502
    body = reply.text
    assert "large model" in reply.json()["error"]["message"]
    port = server.url.split(":")[2].split("/")[0]
    for secret in (server.url, "127.0.0.1", port, "the fake model crashed"):
        assert secret not in body
    assert server.url in log.read_text()  # the operator still learns which server failed
