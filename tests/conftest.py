"""Shared fixtures: a fake Lambda context, a moto server on loopback, handler loading.

No test reaches the internet: AWS is moto (in-process server on 127.0.0.1) and
Kandji is the simulator (a real HTTP server on 127.0.0.1).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Fixtures that several test modules use, defined in helper modules (test modules do not import each other).
pytest_plugins = ["handler_pipeline"]

# Credentials and region for boto3 before anything creates a client; never real ones.
for name, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "kandji-snapshots",
    "POWERTOOLS_METRICS_NAMESPACE": "KandjiSnapshots",
    "POWERTOOLS_TRACE_DISABLED": "1",
}.items():
    os.environ[name] = value
os.environ.pop("AWS_PROFILE", None)


@dataclass
class FakeLambdaContext:
    function_name: str = "kandji-snapshots-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:kandji-snapshots-test"
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    remaining_ms: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def load_handler(function: str):
    """Import functions/<function>/app.py under a unique name (every handler file is app.py)."""
    name = f"{function}_handler_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


HANDLERS = ("collector", "differ", "digest")


@pytest.fixture
def caplog(caplog):
    """pytest's caplog, seeing the domain's records whichever test imported a handler first.

    Importing a handler points the kandji_snapshots logger at the handler's JSON output and stops it
    propagating to the root logger, where caplog listens (Powertools' copy_config_to_registered_loggers,
    which also empties the logger's handlers). So the handlers are imported before the capture starts,
    never in the middle of a test, and the capture listens on the package logger itself.
    """
    for function in HANDLERS:
        load_handler(function)
    package = logging.getLogger("kandji_snapshots")
    propagate = package.propagate
    package.propagate = False  # each record once: through the handler below, not through the root logger too
    package.addHandler(caplog.handler)
    yield caplog
    package.removeHandler(caplog.handler)
    package.propagate = propagate


@pytest.fixture(scope="session")
def moto_endpoint():
    """moto in server mode on loopback: the handlers reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """A clean moto account for one test, reached like real AWS through AWS_ENDPOINT_URL."""
    import requests

    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    yield moto_endpoint


@pytest.fixture(scope="session")
def sam() -> dict:
    """template.yaml as written (SAM), intrinsic tags as their Fn:: forms."""
    from template_model import TEMPLATE_PATH

    from tests.cfn_yaml import load_template

    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="session")
def cfn(sam) -> dict:
    """template.yaml after the offline SAM transform: the CloudFormation that would be deployed."""
    from template_model import transform_template

    return transform_template(sam)


@pytest.fixture(autouse=True)
def _clear_powertools_caches():
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    yield
    parameters.clear_caches()


@pytest.fixture(scope="session")
def checkov_reports(tmp_path_factory):
    """checkov on the SAM template and on its transform, once per test session (over all xdist workers)."""
    from checkov_scan import checkov_reports_of
    from session_once import shared_folder

    def scan(folder: Path) -> None:
        (folder / "reports.json").write_text(json.dumps(checkov_reports_of(str(folder))), encoding="utf-8")

    return json.loads((shared_folder(tmp_path_factory, "checkov", scan) / "reports.json").read_text(encoding="utf-8"))
