"""The Kandji API token goes into one place only: the Authorization header of requests to the tenant.

One whole run, with a known distinctive token: the collector (with retries), the differ, the
fleet changed (`apply_demo_changes`), the collector and differ again, then runs that fail
(token revoked half way, an error body that echoes the token). Everything is captured at
DEBUG: every log record of every logger (message, arguments, extra fields, traceback), the
Powertools handler's output, stdout/stderr with the EMF metrics, every error message, every
object in the bucket, every SNS message (through an SQS queue with raw delivery) and every
HTTP request leaving the process. The token appears in none of them but the Authorization
header of requests to the simulator, and no request goes anywhere but the simulator and moto.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import logging
import threading
import traceback
from pathlib import Path

import boto3
import pytest
import urllib3
from aws_helpers import BUCKET, all_keys, create_bucket, create_secret, drain_queue, subscribe_queue
from conftest import FakeLambdaContext, load_handler
from kandji_fakes import RunClock, run_handler_on

from kandji_snapshots.errors import KandjiApiError, KandjiAuthError
from kandji_snapshots.snapshots.layout import manifest_key
from simulator import Fleet, KandjiSimulator
from simulator.server import MAINTENANCE_HTML

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "kst-Zq8TOKEN-SECRECY-3f9b1c7e5a2d"  # distinctive: found by plain substring search
SCHEDULER_EVENT = json.loads((ROOT / "events" / "scheduler_event.json").read_text())
MANIFEST_EVENT = json.loads((ROOT / "events" / "manifest_created_event.json").read_text())


class EveryLogRecord:
    """Every record any logger emits (after its level check), whatever its handlers and propagation."""

    def __init__(self, monkeypatch) -> None:
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()
        handle = logging.Logger.handle

        def recording(logger, record):
            with self._lock:
                self.records.append(record)
            return handle(logger, record)

        monkeypatch.setattr(logging.Logger, "handle", recording)

    def text(self) -> str:
        lines = []
        for record in list(self.records):
            lines.append(f"{record.levelname} {record.name} {record.getMessage()} {record.__dict__!r}")
            if record.exc_info:
                lines.append("".join(traceback.format_exception(*record.exc_info)))
        return "\n".join(lines)


class EveryRequest:
    """Every HTTP request urllib3 sends (requests and botocore both use it): host, port, URL, headers, body."""

    def __init__(self, monkeypatch) -> None:
        self.sent: list[tuple[str, int, str, str, dict, str]] = []
        urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen

        def recording(pool, method, url, body=None, headers=None, *args, **kwargs):
            text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
            self.sent.append((pool.host, pool.port, method, url, dict(headers or {}), text))
            return urlopen(pool, method, url, body, headers, *args, **kwargs)

        monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", recording)


def project_loggers() -> list[logging.Logger]:
    """The loggers POWERTOOLS_LOG_LEVEL governs: the Powertools service logger and the domain's."""
    return [logging.getLogger(load_handler("collector").logger.name), logging.getLogger("kandji_snapshots")]


@pytest.fixture
def debug_logging(monkeypatch, caplog):
    """POWERTOOLS_LOG_LEVEL=DEBUG, as a deployment with LogLevel=DEBUG runs; returns the Powertools output.

    The handlers may have been imported at INFO by earlier tests, so their loggers are set to DEBUG
    here too. Libraries (botocore, urllib3) keep the root logger's level, WARNING as in Lambda's
    Python runtime; `test_with_every_library_at_debug...` below is about them.
    """
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    load_handler("differ")
    loggers = project_loggers()
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.WARNING)  # the root logger
    # What the Powertools handler writes (its stream was bound when the logger was first created).
    output = io.StringIO()
    streams = [(handler, handler.setStream(output)) for handler in loggers[0].handlers
               if isinstance(handler, logging.StreamHandler)]
    yield output
    for handler, stream in streams:
        handler.setStream(stream)
    for logger, level in levels.items():
        logger.setLevel(level)


class Deployment:
    """The simulator (holding TOKEN) and moto's bucket, secret, topic and raw-delivery queue, wired to both handlers."""

    def __init__(self, fleet: Fleet, monkeypatch):
        self.fleet = fleet
        self.sim = KandjiSimulator(fleet, token=TOKEN).start()
        create_bucket()
        secret_arn = create_secret(json.dumps({"api_url": self.sim.api_url, "api_token": TOKEN}))
        topic_arn = boto3.client("sns").create_topic(Name="kandji-changes")["TopicArn"]
        self.queue_url = subscribe_queue(topic_arn, "changes")
        for name, value in {"KANDJI_SECRET_ID": secret_arn, "SNAPSHOT_BUCKET": BUCKET,
                            "CHANGES_TOPIC_ARN": topic_arn, "KANDJI_ALLOW_INSECURE_LOCALHOST": "true",
                            "KANDJI_MAX_REQUESTS_PER_SECOND": "1000", "MAX_EVENTS_PER_RUN": "500"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DIFF_IGNORE_FIELDS", raising=False)
        self.clock = RunClock()

    def collect(self) -> dict:
        return run_handler_on(self.clock.next_run(), SCHEDULER_EVENT, FakeLambdaContext())

    def diff(self, snapshot_id: str) -> dict:
        event = copy.deepcopy(MANIFEST_EVENT)
        event["detail"]["bucket"]["name"] = BUCKET
        event["detail"]["object"]["key"] = manifest_key(snapshot_id)
        return load_handler("differ").lambda_handler(event, FakeLambdaContext())


@pytest.fixture
def deploy(aws, monkeypatch):
    deployments = []

    def start(fleet: Fleet) -> Deployment:
        deployments.append(Deployment(fleet, monkeypatch))
        return deployments[-1]

    yield start
    for deployment in deployments:
        deployment.sim.stop()


def test_the_token_is_only_ever_in_the_authorization_header_of_requests_to_the_tenant(
        deploy, aws, monkeypatch, capsys, debug_logging):
    fleet = Fleet.generate(40, seed=41)
    run = deploy(fleet)
    sim, faults = run.sim, run.sim.faults
    capsys.readouterr()  # set-up done: from here on, everything is the pipeline's
    logs = EveryLogRecord(monkeypatch)
    requests_sent = EveryRequest(monkeypatch)
    errors: list[BaseException] = []

    # 1. A first snapshot through retries of every kind.
    faults.rate_limit_burst(times=3, retry_after=0)
    faults.fail(r"/details$", status=500, times=3)
    faults.fail(r"/apps$", status=502, times=2, body=MAINTENANCE_HTML, content_type="text/html")
    faults.reset_connection(r"/apps$", times=2)
    faults.malformed(r"/devices$", kind="truncated")
    faults.malformed(r"/details$", kind="incomplete")
    first = run.collect()["snapshot_id"]
    run.diff(first)

    # 2. The fleet changes; a second snapshot (more retries) and its change events.
    changes = fleet.apply_demo_changes()
    faults.rate_limit_burst(times=2, retry_after=None, path_regex=r"/apps$")
    faults.malformed(r"/apps$", times=2, kind="not_json")
    second = run.collect()["snapshot_id"]
    result = run.diff(second)
    assert result["events"] >= 6

    # 3. Runs that fail: the token revoked half way, and a 400 whose body echoes the token back.
    faults.revoke_token_after(30)
    with pytest.raises(KandjiAuthError) as revoked:
        run.collect()
    errors.append(revoked.value)
    faults.clear()
    faults.fail(r"/details$", status=400, times=1, body={"detail": f"Malformed header: Bearer {TOKEN}"})
    with pytest.raises(KandjiApiError) as echoed:
        run.collect()
    errors.append(echoed.value)
    assert "<redacted>" in str(echoed.value)  # the body excerpt was kept, the token cut out of it
    run.diff(second)  # a redelivered trigger
    captured = capsys.readouterr()
    moto_host = aws.split("//")[1]
    queue_url = run.queue_url

    # Logs: every record of every logger, the Powertools JSON lines, stdout (EMF metrics) and stderr.
    logged = logs.text()
    assert all(logger.isEnabledFor(logging.DEBUG) for logger in project_loggers())
    assert logging.getLogger("kandji_snapshots.kandji.client").isEnabledFor(logging.DEBUG)
    assert "snapshot committed" in logged and "snapshot diffed" in logged and "collection failed" in logged
    assert "snapshot committed" in debug_logging.getvalue()  # the handler's own JSON output
    emf = [line for line in captured.out.splitlines() if line.startswith('{"_aws"')]
    assert len(emf) >= 6 and any('"CollectionFailed"' in line for line in emf)
    for where, text in {"log records": logged, "Powertools output": debug_logging.getvalue(),
                        "stdout (EMF metrics)": captured.out, "stderr": captured.err}.items():
        assert TOKEN not in text, f"the token is in the {where}"

    # Errors, with their causes and tracebacks.
    for error in errors:
        text = "".join(traceback.format_exception(error))
        assert TOKEN not in text and TOKEN not in repr(error)

    # Every object in the bucket: snapshots, manifests, changes files, progress markers.
    s3 = boto3.client("s3")
    keys = all_keys()
    assert any(key.startswith("changes/dt=") for key in keys) and any("/manifests/" in key for key in keys)
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        if key.endswith(".gz"):
            body = gzip.decompress(body)
        assert TOKEN.encode() not in body, key
        assert TOKEN not in key

    # Every SNS message, body and attributes.
    messages = drain_queue(queue_url)
    assert len(messages) == result["events"] + 2
    assert changes["removed"]["device_id"] in {json.loads(m["Body"]).get("device_id") for m in messages}
    for message in messages:
        assert TOKEN not in json.dumps(message)

    # The simulator only ever saw the token as a bearer token, never in a path or query.
    assert sim.tokens_seen == {f"Bearer {TOKEN}"}
    assert all(TOKEN not in path + query for _, _, path, query, _ in sim.stats.request_log)

    # Every request that left the process went to the simulator or to moto; the token only in the
    # Authorization header of those to the simulator.
    destinations = {f"{host}:{port}" for host, port, *_ in requests_sent.sent}
    assert destinations == {f"127.0.0.1:{sim.port}", moto_host}
    for host, port, method, url, headers, body in requests_sent.sent:
        if f"{host}:{port}" == f"127.0.0.1:{sim.port}":
            assert method == "GET" and url.startswith("/api/v1/")
            assert headers["Authorization"] == f"Bearer {TOKEN}"
            headers = {name: value for name, value in headers.items() if name != "Authorization"}
        assert TOKEN not in url and TOKEN not in json.dumps(headers, default=str) and TOKEN not in body
    assert sum(1 for host, port, *_ in requests_sent.sent if port == sim.port) == sim.stats.requests


def test_with_every_library_at_debug_the_secret_read_logs_no_token(deploy, monkeypatch, caplog):
    run = deploy(Fleet.generate(5, seed=42))
    caplog.set_level(logging.DEBUG)  # the root logger: botocore, urllib3, everything without its own level
    logs = EveryLogRecord(monkeypatch)
    run.collect()
    leaking = sorted({record.name for record in logs.records
                      if TOKEN in f"{record.getMessage()} {record.__dict__!r}"})
    assert leaking == []
