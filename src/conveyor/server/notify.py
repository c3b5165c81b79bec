"""Webhooks on finished runs: a JSON body (or Slack's) POSTed to each notification's URL.

A daemon thread looks for finished runs every `interval` seconds, claims each delivery in the
store (so two servers never both send one) and sends it on a worker, retrying connection
errors, timeouts, 5xx and 429 with exponential backoff. A succeeded run is told to
notifications with `on_success`, a failed one to those with `on_failure`; a cancelled run to
none (a person stopped it). A failing webhook never touches the run. Webhook URLs carry their
secret in the path (Slack's do), so only `redact(url)` is logged, stored or shown.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from http.client import HTTPException
from itertools import islice
from pathlib import Path
from urllib.parse import urlsplit

from conveyor import __version__
from conveyor.server.scheduler import FieldError, registered
from conveyor.settings import Settings
from conveyor.store.notifications import NotificationRecord, PendingDelivery
from conveyor.store.repository import RunRecord, Store
from conveyor.store.times import now

log = logging.getLogger(__name__)

METRICS_PER_TASK = 50  # a webhook body stays small whatever a task writes
SLACK_FIELDS = 10  # the most fields Slack shows in one section


def redact(url: str) -> str:
    """`scheme://host[:port]/…`: what of a webhook URL may be shown."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}/…"


def new_notification(store: Store, pipeline: str, url: str, on_success: bool = True,
                     on_failure: bool = True, slack: bool = False) -> NotificationRecord:
    """Check a webhook (address, events, registered pipeline) and store it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError("url", "url: give the webhook's http:// or https:// address")
    if not (on_success or on_failure):
        raise FieldError("on_success", "this webhook would be called on nothing: keep"
                                       " on_success or on_failure")
    registered(store, pipeline)
    return store.add_notification(pipeline, url, on_success, on_failure, slack)


def notification_json(record: NotificationRecord) -> dict:
    return {"id": record.id, "pipeline": record.pipeline, "url": redact(record.url),
            "on_success": record.on_success, "on_failure": record.on_failure,
            "slack": record.slack, "created_at": record.created_at.isoformat()}


def run_message(run: RunRecord, event: str, runs_root: Path, public_url: str) -> dict:
    """The plain JSON body: the run, its tasks, and the metrics.json its tasks wrote."""
    return {
        "event": event, "run_id": run.id, "pipeline": run.pipeline, "status": run.status,
        "started_at": run.started_at and run.started_at.isoformat(),
        "finished_at": run.finished_at and run.finished_at.isoformat(),
        "duration": _seconds(run.started_at, run.finished_at),
        "tasks": [{"name": t.name, "status": t.status,
                   "duration": _seconds(t.started_at, t.finished_at)} for t in run.tasks],
        "failed_tasks": [t.name for t in run.tasks if t.status == "failed"],
        "metrics": read_metrics(runs_root, run.id, [t.name for t in run.tasks]),
        "url": f"{public_url}/#/runs/{run.id}",
    }


def slack_message(message: dict) -> dict:
    """Slack's incoming-webhook body: a one-line summary with a link, metrics as fields."""
    icon = ":white_check_mark:" if message["event"] == "run.succeeded" else ":x:"
    summary = f"{icon} {_escape(message['pipeline'])}: run {message['run_id']}" \
              f" {message['status']}"
    if message["duration"] is not None:
        summary += f" in {_human(message['duration'])}"
    if message["failed_tasks"]:
        summary += f"; failed: {_escape(', '.join(message['failed_tasks']))}"
    summary += f" — <{message['url']}|open the run>"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": summary}}]
    fields = [{"type": "mrkdwn", "text": f"*{_escape(f'{task} {key}')}*\n{_escape(_shown(value))}"}
              for task, metrics in message["metrics"].items() for key, value in metrics.items()]
    if fields:
        blocks.append({"type": "section", "fields": fields[:SLACK_FIELDS]})
    return {"text": summary, "blocks": blocks}


def read_metrics(runs_root: Path, run_id: str, tasks: list[str]) -> dict[str, dict]:
    """{task: {key: number or text}} from each task's output folder's metrics.json; nested
    keys are joined with dots, lists are left out."""
    found = {}
    for task in tasks:
        path = runs_root / run_id / "outputs" / task / "metrics.json"
        try:
            if path.stat().st_size > 1_000_000:
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        flat = dict(islice(_flatten(data, ""), METRICS_PER_TASK))
        if flat:
            found[task] = flat
    return found


class Notifier:
    """Sends the webhooks of finished runs; `deliver_pending()` is one pass."""

    def __init__(self, store: Store, public_url: str, *, settings: Settings,
                 interval: float = 2.0, attempts: int = 5, base_delay: float = 1.0,
                 timeout: float = 10.0, stale_after: float = 300.0, workers: int = 4):
        self._store, self._public_url = store, public_url.rstrip("/")
        self._runs_root = settings.runs_root
        self._interval, self._attempts, self._base_delay = interval, attempts, base_delay
        self._timeout, self._stale_after, self._workers = timeout, stale_after, workers
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="conveyor-webhook")
        self._sending: set[Future] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="conveyor-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop looking and retrying; a delivery cut short is claimed again once stale."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

    def deliver_pending(self) -> list[Future]:
        """Claim what workers are free for and send it; the futures end with the deliveries.
        Claiming no more than that keeps a claim from going stale while it waits in a queue."""
        self._sending = {f for f in self._sending if not f.done()}
        free = self._workers - len(self._sending)
        if free <= 0:
            return []
        stale_before = now() - timedelta(seconds=self._stale_after)
        started = [self._pool.submit(self._deliver, pending)
                   for pending in self._store.pending_deliveries(stale_before, limit=free)
                   if self._store.claim_delivery(pending)]
        self._sending.update(started)
        return started

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.deliver_pending()
            except Exception:  # the database may be back on the next pass
                log.exception("webhooks: a pass failed; trying again")

    def _deliver(self, pending: PendingDelivery) -> None:
        hook = pending.notification
        try:
            self._send(pending)
        except Exception as err:
            log.exception("webhook %d (%s): run %s not told", hook.id, redact(hook.url),
                          pending.run_id)
            self._store.update_delivery(hook.id, pending.run_id, status="failed",
                                        message=f"broke: {type(err).__name__}")

    def _send(self, pending: PendingDelivery) -> None:
        hook, run_id = pending.notification, pending.run_id
        where = redact(hook.url)
        body = run_message(self._store.get_run(run_id), pending.event, self._runs_root,
                           self._public_url)
        if hook.slack:
            body = slack_message(body)
        data = json.dumps(body).encode()
        for attempt in range(1, self._attempts + 1):
            code, problem = self._post(hook.url, data)
            if code is not None and 200 <= code < 300:
                self._store.update_delivery(hook.id, run_id, status="delivered", attempts=attempt,
                                            response_code=code, message=None)
                log.info("webhook %d (%s): told run %s", hook.id, where, run_id)
                return
            retry = code is None or code == 429 or code >= 500
            if not retry or attempt == self._attempts:
                message = f"gave up after {attempt} attempt{'s' * (attempt > 1)}: {problem}"
                self._store.update_delivery(hook.id, run_id, status="failed", attempts=attempt,
                                            response_code=code, message=message)
                log.warning("webhook %d (%s): run %s not told: %s", hook.id, where, run_id,
                            message)
                return
            delay = self._base_delay * 2 ** (attempt - 1)
            self._store.update_delivery(hook.id, run_id, attempts=attempt, response_code=code,
                                        message=f"{problem}; trying again in {delay:g} s")
            if self._stopping.wait(delay):
                return  # left `sending`: claimed again once stale

    def _post(self, url: str, data: bytes) -> tuple[int | None, str]:
        """(status code or None, what went wrong), with the URL's secret kept out."""
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"conveyor/{__version__}"})
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return response.status, ""
        except urllib.error.HTTPError as err:
            err.close()
            return err.code, f"{redact(url)} answered {err.code}"
        except (OSError, HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            return None, f"cannot reach {redact(url)}: {str(reason).replace(url, redact(url))}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that moved answers with its 3xx code: its URL needs updating, and a POST
    turned into a GET would lose the body."""

    def redirect_request(self, *args, **kwargs):
        return None


def _flatten(value, key: str):
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from _flatten(inner, f"{key}.{name}" if key else str(name))
    elif key and isinstance(value, int | str):
        yield key, value[:200] if isinstance(value, str) else value
    elif key and isinstance(value, float) and math.isfinite(value):  # NaN is not JSON
        yield key, value


def _seconds(start, end) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def _human(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s" if minutes \
        else f"{seconds:.1f}s"


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _escape(text: str) -> str:
    """Slack's mrkdwn reads &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
