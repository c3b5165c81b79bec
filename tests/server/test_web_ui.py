"""The web UI in a real browser (Debian's Chromium driven by Playwright) against a real
`conveyor server` started as a subprocess: register a pipeline, run it, watch it turn green,
read a task's log and see its plot; edit a pipeline through its forms; a phone-sized run page.

Every test fails on a console error of the page; a failing test leaves a screenshot and says
where it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello" / "pipeline.yaml"
WAIT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (make browser installs it)")

# a task that draws a 40x20 PNG with the standard library, writes a report and a stderr line
PLOT_PIPELINE = """\
version: "1"
name: plotter
description: Draws a small plot.
tasks:
- name: draw
  command: |
    echo "drawing the plot"
    echo "a warning on stderr" >&2
    python - <<'PY'
    import os, struct, zlib
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    width, height = 40, 20
    rows = b"".join(b"\\x00" + bytes([200, 80, 60]) * width for _ in range(height))
    png = (b"\\x89PNG\\r\\n\\x1a\\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    out = os.environ["CONVEYOR_OUTPUT"]
    open(os.path.join(out, "plot.png"), "wb").write(png)
    open(os.path.join(out, "report.html"), "w").write("<h1>report</h1>")
    PY
  resources: {cpu: 1, mem: 64m}
"""

ONE_TASK = """\
version: "1"
name: {name}
description: One task to start from.
tasks:
- name: first
  command: echo "first here"
  resources: {{cpu: 1, mem: 32m}}
"""


# ---- the server ------------------------------------------------------------------------------

@dataclass
class Server:
    url: str
    process: subprocess.Popen
    token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
        return json.loads(text) if text else {}


def _start_server(port: int, log: Path, token: str | None = None) -> Server:
    env = dict(os.environ)  # the autouse fixture's CONVEYOR_HOME and CONVEYOR_CAPACITY
    env.pop("CONVEYOR_SERVER_TOKEN", None)
    if token:
        env["CONVEYOR_SERVER_TOKEN"] = token
    out = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "server", "--port", str(port)],
        env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    server = Server(f"http://127.0.0.1:{port}", process, token)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"conveyor server exited with {process.returncode}:\n"
                                 f"{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(server.url + "/api/info", timeout=2):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("conveyor server did not answer in 30 s:\n"
                                     + log.read_text(errors="replace")) from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def server(free_port: int, tmp_path: Path) -> Iterator[Server]:
    running = _start_server(free_port, tmp_path / "server.log")
    try:
        yield running
    finally:
        _stop(running.process)


# ---- the browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class UI:
    page: object
    shots: Path
    errors: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def checked(self, name: str) -> Iterator[None]:
        """Fail on console errors; on any failure keep a screenshot and say where it is."""
        try:
            yield
            assert not self.errors, "the page logged errors:\n" + "\n".join(self.errors)
        except Exception as err:
            self.shots.mkdir(parents=True, exist_ok=True)
            shot = self.shots / f"{name}.png"
            try:
                self.page.screenshot(path=str(shot), full_page=True)
                where = f"screenshot: {shot}"
            except Exception as shot_err:  # the page may be gone
                where = f"(no screenshot: {shot_err})"
            console = "\n".join(self.errors)
            raise AssertionError(f"{err}\n{where}\nconsole errors: {console or 'none'}") from err


@pytest.fixture
def ui(browser, tmp_path: Path) -> Iterator[UI]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    found = UI(page, tmp_path / "screenshots")
    page.on("console", lambda msg: found.errors.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    page.on("pageerror", lambda err: found.errors.append(f"pageerror: {err}"))
    try:
        yield found
    finally:
        context.close()


def _status_of(page, selector: str) -> str | None:
    return page.get_attribute(selector, "data-status")


def _wait_fill(page, selector: str, colour: str) -> None:
    """Wait for a box to be painted `colour` (its fill fades in over a moment)."""
    page.wait_for_function(
        "([sel, colour]) => { const el = document.querySelector(sel);"
        " return !!el && getComputedStyle(el).fill === colour; }", arg=[selector, colour])


def _register_by_form(page, base: str, text: str) -> None:
    page.goto(base + "/#/pipelines?new=1")
    page.locator("#new-pipeline textarea").fill(text)
    page.click("button[data-action=register]")


def _start_run(page) -> None:
    page.click("button[data-action=run]")
    page.click("button[data-action=start-run]")
    page.wait_for_url("**/#/runs/*")


# ---- scenarios -------------------------------------------------------------------------------

def test_register_run_watch_logs_and_plot(server: Server, ui: UI, tmp_path: Path) -> None:
    page = ui.page
    with ui.checked("register_run"):
        # the example pipeline, pasted into the new-pipeline form
        _register_by_form(page, server.url, HELLO.read_text(encoding="utf-8"))
        page.wait_for_selector("h1[data-pipeline=hello-fanout]")
        assert page.locator("#pipeline-dag .dag-node").count() == 5
        _start_run(page)

        for task in ("prepare", "count-a", "count-b", "join"):
            node = f"#run-dag .dag-node[data-task={task}]"
            page.wait_for_selector(f"{node}[data-status=succeeded]")
            _wait_fill(page, f"{node} rect", "rgb(143, 209, 158)")  # green
        assert _status_of(page, "#run-dag .dag-node[data-task=upload]") == "skipped"
        _wait_fill(page, "#run-dag .dag-node[data-task=upload] rect", "rgb(245, 184, 204)")  # pink
        page.wait_for_selector("#run-status[data-status=succeeded]")
        assert page.locator("tr[data-task=join] .badge").inner_text() == "succeeded"

        # the log of a task, and its artifact
        page.click("#run-dag .dag-node[data-task=count-a]")
        page.wait_for_selector("#log .log-line")
        assert page.locator("#log").inner_text().strip() == "15"  # 3 lines of 5 words
        page.wait_for_selector("#artifacts .artifact[data-path='count.txt']")

        # a pipeline whose task draws a plot, registered from its file on the server
        plot_file = tmp_path / "plotter" / "pipeline.yaml"
        plot_file.parent.mkdir()
        plot_file.write_text(PLOT_PIPELINE, encoding="utf-8")
        page.goto(server.url + "/#/pipelines?new=1")
        page.fill("input[name=path]", str(plot_file))
        page.click("button[data-action=register-path]")
        page.wait_for_selector("h1[data-pipeline=plotter]")
        _start_run(page)
        page.wait_for_selector("#run-dag .dag-node[data-task=draw][data-status=succeeded]")
        page.click("#run-dag .dag-node[data-task=draw]")
        page.wait_for_selector("#log .log-line.stderr")
        assert "a warning on stderr" in page.locator("#log .log-line.stderr").inner_text()
        assert "drawing the plot" in page.locator("#log .log-line.stdout").first.inner_text()
        image = "#artifacts .artifact[data-path='plot.png'] img"
        page.wait_for_selector(image)
        page.wait_for_function(
            f"() => {{ const i = document.querySelector({json.dumps(image)});"
            " return i && i.complete && i.naturalWidth > 0; }")
        assert page.eval_on_selector(image, "i => i.naturalWidth") == 40
        report = page.locator("#artifacts .artifact[data-path='report.html'] a")
        assert report.get_attribute("target") == "_blank"


def test_edit_pipeline_through_forms(server: Server, ui: UI) -> None:
    page = ui.page
    with ui.checked("edit_pipeline"):
        _register_by_form(page, server.url, ONE_TASK.format(name="edited"))
        page.wait_for_selector("#pipeline-dag .dag-node[data-task=first]")

        # a new task through the form, depending on the first
        page.click("button[data-action=add-task]")
        form = page.locator("form.task-form")
        form.locator("input[name=name]").fill("second")
        form.locator("textarea[name=command]").fill('echo "second here"')
        form.locator("input[name=cpu]").fill("0.5")
        form.locator("input[name=mem]").fill("16m")
        form.locator("textarea[name=envs]").fill("MODE=fast")
        form.locator("input[name=dependency][value=first]").check()
        form.locator("button[data-action=save-task]").click()
        page.wait_for_selector("#pipeline-dag .dag-node[data-task=second]")
        assert page.locator(
            "#pipeline-dag .dag-edge[data-from=first][data-to=second]").count() == 1
        # the second box is right of the first: one layer further
        first = page.locator("#pipeline-dag .dag-node[data-task=first] rect")
        second = page.locator("#pipeline-dag .dag-node[data-task=second] rect")
        assert float(second.get_attribute("x")) > float(first.get_attribute("x"))

        # a taken name is shown next to the name field
        page.click("button[data-action=add-task]")
        form = page.locator("form.task-form")
        form.locator("input[name=name]").fill("first")
        form.locator("textarea[name=command]").fill("true")
        form.locator("button[data-action=save-task]").click()
        error = form.locator("[data-field=name] .field-error")
        error.wait_for()
        assert "first" in error.inner_text()

        # the server's answer to a bad size is shown next to the memory field
        form.locator("input[name=name]").fill("third")
        form.locator("input[name=mem]").fill("lots")
        form.locator("button[data-action=save-task]").click()
        error = form.locator("[data-field='resources.mem'] .field-error")
        error.wait_for()
        assert "not a size" in error.inner_text()
        # Chromium logs the 400 answer itself; that one is expected
        ui.errors[:] = [e for e in ui.errors if "status of 400" not in e]

        # the YAML shows the new task
        page.click("button[data-tab=yaml]")
        yaml_box = page.locator(".yaml-editor textarea")
        text = yaml_box.input_value()
        assert "name: second" in text and "MODE: fast" in text

        # a bad YAML: its problem is shown with its line
        bad = text.replace("name: second", "name: second\n  colour: blue", 1)
        line = bad.splitlines().index("  colour: blue") + 1
        yaml_box.fill(bad)
        page.click("button[data-action=validate]")
        problem = page.locator(".problems .problem").first
        problem.wait_for()
        assert problem.get_attribute("data-line") == str(line)
        assert f"line {line}" in problem.inner_text() and "colour" in problem.inner_text()
        assert not ui.errors


def test_run_page_fits_a_phone(server: Server, ui: UI) -> None:
    server.call("POST", "/api/pipelines", {"yaml": ONE_TASK.format(name="phone")})
    run = server.call("POST", "/api/runs", {"pipeline": "phone"})
    page = ui.page
    page.set_viewport_size({"width": 390, "height": 844})
    with ui.checked("phone"):
        page.goto(f"{server.url}/#/runs/{run['id']}")
        page.wait_for_selector("#run-dag .dag-node[data-task=first][data-status=succeeded]")
        page.click("tr[data-task=first]")
        page.wait_for_selector("#log .log-line")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 391, f"the page is {width} px wide on a 390 px screen"


def test_token_is_asked_for_and_sent(free_port: int, tmp_path: Path, ui: UI) -> None:
    running = _start_server(free_port, tmp_path / "server.log", token="s3cret")
    try:
        page = ui.page
        with ui.checked("token"):
            page.goto(running.url + "/#/pipelines?new=1")
            page.wait_for_selector("#token-form:not([hidden])")
            page.locator("#new-pipeline textarea").fill(ONE_TASK.format(name="guarded"))
            page.click("button[data-action=register]")
            # the browser logs the 401 answer itself; that one is expected
            page.wait_for_selector(".problems-box, .banner-item.error")
            assert "admin token" in page.locator("#banner, .problems").first.inner_text()
            ui.errors[:] = [e for e in ui.errors if "401" not in e]
            page.fill("#token-input", "s3cret")
            page.click("#token-form button")
            page.click("button[data-action=register]")
            page.wait_for_selector("h1[data-pipeline=guarded]")
    finally:
        _stop(running.process)


def test_services_token_chat_and_stop(server: Server, ui: UI, cli, tmp_path: Path,
                                      replica_server: str, services) -> None:
    started = cli("serve", tmp_path, "--runtime", "cmd", "--command", replica_server,
                  "--port", "0", "--name", "echo", "--detach")
    assert started.returncode == 0, started.stderr
    page = ui.page
    with ui.checked("services"):
        page.goto(server.url + "/#/services")
        card = page.locator("[data-service=echo]")
        card.wait_for()
        assert card.locator(".badge").first.inner_text() == "running"
        assert "http://127.0.0.1:" in card.inner_text()

        card.locator("button[data-action=token]").click()
        token = card.locator("input[aria-label='service token']")
        token.wait_for()
        assert token.input_value().count(".") == 2  # a JWT

        card.locator("summary").click()
        card.locator("textarea").fill("What is FOB?")
        card.locator(".chat button[type=submit]").click()
        card.locator(".chat-msg.assistant").wait_for()
        assert "ok" in card.locator(".chat-msg.assistant").inner_text()

        card.locator("button[data-action=stop]").click()
        card.locator("button[data-action=stop]").click()  # the second click confirms
        page.wait_for_selector("[data-service=echo][data-status=STOPPED]", timeout=45_000)
