"""/api/services over real HTTP, against a service with a stand-in runtime."""

from __future__ import annotations

import jwt


def test_status_token_chat_and_stop(api, cli, tmp_path, replica_server, services, wait_until):
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--port", "0", "--name", "echo", "--detach")
    assert started.returncode == 0, started.stderr
    listed = api.get("/api/services").json()
    assert [(s["name"], s["status"]) for s in listed] == [("echo", "RUNNING")]
    one = api.get("/api/services/echo").json()
    assert one["endpoint"].startswith("http://127.0.0.1:") and one["replicas"][0]["status"] \
        == "RUNNING"  # the cmd runtime has no health check

    minted = api.post("/api/services/echo/token", json={"hours": 1}).json()
    claims = jwt.decode(minted["token"], options={"verify_signature": False})
    assert claims["sub"] == "echo"
    assert 3500 <= claims["exp"] - claims["iat"] <= 3700

    reply = api.post("/api/services/echo/chat", json={
        "messages": [{"role": "user", "content": "What is FOB?"}], "max_tokens": 8})
    assert reply.status_code == 200, reply.text
    assert reply.json()["content"] == "ok" and reply.json()["model"] == "echo"

    stopping = api.post("/api/services/echo/stop")
    assert stopping.status_code == 202
    wait_until(lambda: api.get("/api/services/echo").json()["status"] == "STOPPED", timeout=40)
    refused = api.post("/api/services/echo/chat", json={
        "messages": [{"role": "user", "content": "still there?"}]})
    assert refused.status_code == 400 and "STOPPED" in refused.json()["message"]


def test_unknown_services_and_empty_chats(api):
    missing = api.get("/api/services/nope")
    assert missing.status_code == 404 and "no service named 'nope'" in missing.json()["message"]
    empty = api.post("/api/services/nope/chat", json={"messages": []})
    assert empty.status_code == 422 and empty.json()["field"] == "messages"
