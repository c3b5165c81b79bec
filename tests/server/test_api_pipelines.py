"""/api/pipelines over real HTTP: registering, validating and editing tasks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

SMALL = textwrap.dedent("""\
    name: small
    description: two steps
    tasks:
    - name: first
      command: echo one
    - name: second
      command: echo two
      dependencies: [first]
    """)


def register(api, text: str = SMALL, **extra) -> dict:
    reply = api.post("/api/pipelines", json={"yaml": text, **extra})
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_register_list_get_and_delete(api):
    created = register(api)
    assert created["name"] == "small"
    assert created["dependencies"] == {"first": [], "second": ["first"]}
    assert Path(created["directory"]).is_dir()
    listed = api.get("/api/pipelines").json()
    assert [(p["name"], p["tasks"], p["last_run"]) for p in listed] == [("small", 2, None)]
    assert api.get("/api/pipelines/small").json()["yaml"] == SMALL
    assert api.delete("/api/pipelines/small").status_code == 204
    missing = api.get("/api/pipelines/small")
    assert missing.status_code == 404
    assert "no pipeline 'small'" in missing.json()["message"]


def test_a_taken_name_is_a_conflict_unless_replaced(api):
    register(api)
    again = api.post("/api/pipelines", json={"yaml": SMALL.replace("two steps", "v2")})
    assert again.status_code == 409
    assert again.json()["field"] == "name"
    register(api, SMALL.replace("two steps", "v2"), replace=True)
    assert api.get("/api/pipelines/small").json()["description"] == "v2"


def test_register_from_a_file_keeps_its_folder(api, write_pipeline):
    path = write_pipeline(SMALL)
    reply = api.post("/api/pipelines", json={"path": str(path)})
    assert reply.status_code == 201, reply.text
    assert reply.json()["source"] == str(path)
    assert reply.json()["directory"] == str(path.parent)
    missing = api.post("/api/pipelines", json={"path": str(path.parent / "nope.yaml")})
    assert missing.status_code == 400 and missing.json()["field"] == "path"


def test_validation_reports_every_problem_with_its_line(api):
    bad = SMALL.replace("dependencies: [first]", "dependencies: [third]").replace(
        "command: echo one", "command: echo one\n  resources: {cpu: -1}")
    reply = api.post("/api/pipelines/validate", json={"yaml": bad})
    assert reply.status_code == 200
    body = reply.json()
    assert body["ok"] is False
    fields = {p["field"]: p["line"] for p in body["problems"]}
    assert fields["tasks[second].dependencies"] == 9
    assert fields["tasks[first].resources.cpu"] == 6
    assert api.post("/api/pipelines/validate", json={"yaml": SMALL}).json() == {
        "ok": True, "problems": [], "pipeline": "small"}
    syntax = api.post("/api/pipelines/validate", json={"yaml": "name: [oops"}).json()
    assert syntax["ok"] is False and syntax["problems"][0]["line"] in (1, 2)
    assert "not valid YAML" in syntax["problems"][0]["field"]


def test_registering_invalid_yaml_is_a_json_error_with_the_field(api):
    reply = api.post("/api/pipelines", json={"yaml": SMALL.replace("echo one", "")})
    assert reply.status_code == 400
    body = reply.json()
    assert body["field"] == "tasks[first]"
    assert "`command`" in body["message"]
    assert body["problems"][0]["line"] == 4


def test_add_edit_duplicate_and_delete_tasks(api):
    register(api)
    added = api.post("/api/pipelines/small/tasks", json={"task": {
        "name": "third", "command": "echo three", "dependencies": ["second"],
        "resources": {"cpu": 0.5, "mem": "64m"}, "mounts": ["data:d"]}})
    assert added.status_code == 201, added.text
    assert added.json()["dependencies"]["third"] == ["second"]

    renamed = api.put("/api/pipelines/small/tasks/second", json={"task": {
        "name": "middle", "command": "echo 2", "dependencies": ["first"]}})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["dependencies"] == {"first": [], "middle": ["first"],
                                              "third": ["middle"]}

    copied = api.post("/api/pipelines/small/tasks/middle/duplicate", json={})
    assert copied.status_code == 201
    names = [t["name"] for t in copied.json()["tasks"]]
    assert names == ["first", "middle", "middle-copy", "third"]
    again = api.post("/api/pipelines/small/tasks/middle/duplicate", json={}).json()
    assert "middle-copy-2" in [t["name"] for t in again["tasks"]]

    removed = api.delete("/api/pipelines/small/tasks/middle")
    assert removed.status_code == 200
    assert removed.json()["dependencies"]["third"] == []
    stored = yaml.safe_load(api.get("/api/pipelines/small").json()["yaml"])
    assert [t["name"] for t in stored["tasks"]] == ["first", "middle-copy-2", "middle-copy",
                                                    "third"]
    assert stored["tasks"][-1]["resources"] == {"cpu": 0.5, "mem": "64m"}


def test_a_bad_task_is_refused_and_nothing_changes(api):
    register(api)
    reply = api.put("/api/pipelines/small/tasks/first", json={"task": {
        "name": "first", "command": "echo", "resources": {"cpu": 64}}})
    assert reply.status_code == 400
    assert reply.json()["field"] == "tasks[first].resources"
    assert "64" in reply.json()["message"]
    cycle = api.put("/api/pipelines/small/tasks/first", json={"task": {
        "name": "first", "command": "echo", "dependencies": ["second"]}})
    assert cycle.status_code == 400 and "cycle" in cycle.json()["message"]
    assert api.get("/api/pipelines/small").json()["yaml"] == SMALL
    taken = api.post("/api/pipelines/small/tasks", json={"task": {"name": "first",
                                                                  "command": "x"}})
    assert taken.status_code == 409
    unknown = api.delete("/api/pipelines/small/tasks/nope")
    assert unknown.status_code == 404 and unknown.json()["field"] == "task"


def test_the_yaml_can_be_replaced_but_not_renamed(api):
    register(api)
    changed = SMALL.replace("echo two", "echo 2")
    assert api.put("/api/pipelines/small", json={"yaml": changed}).json()["yaml"] == changed
    renamed = api.put("/api/pipelines/small", json={"yaml": changed.replace("name: small",
                                                                            "name: big")})
    assert renamed.status_code == 400 and renamed.json()["field"] == "name"


def test_a_body_of_the_wrong_shape_is_a_json_422(api):
    reply = api.post("/api/pipelines/small/tasks", json={"nothing": 1})
    assert reply.status_code == 422
    assert reply.json()["field"] == "task"
