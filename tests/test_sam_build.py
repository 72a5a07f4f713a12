"""The deployable artifact is the tested artifact: `sam validate --lint`, `sam build`, then the built
collector and differ run against the simulator over HTTP and moto's server.

The built handlers run in a fresh Python 3.13 (Lambda's version) that sees only what Lambda gives
them: the built function folder, the built layer's python/ folder and boto3 as the runtime provides
it; nothing from the source tree. One build per session (about 20 s); `-m "not sam_build"` skips it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from aws_helpers import BUCKET, create_bucket, create_secret, drain_queue, manifests, subscribe_queue
from session_once import shared_folder

from scripts.sam_artifacts import (
    FUNCTIONS,
    LAYER,
    ROOT,
    MissingTool,
    lambda_environment,
    lambda_sys_path,
    python313,
    runtime_packages,
    sam_build,
    sam_cli,
    sam_validate,
)
from simulator import Fleet, KandjiSimulator

pytestmark = pytest.mark.sam_build

TOKEN = "kst-built-artifact-token"
LAMBDA_LIMIT_BYTES = 250 * 1024 * 1024  # function + layers, unzipped

# Runs one handler as Lambda would, then checks that nothing came from the source tree.
DRIVER = """
import json, sys
import importlib
paths, source_tree, handler, event, result_file = json.loads(sys.argv[1])
sys.path[0:1] = paths

class Context:
    function_name = "kandji-snapshots-built"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:kandji-snapshots-built"
    aws_request_id = "00000000-0000-4000-8000-000000000001"
    def get_remaining_time_in_millis(self):
        return 600_000

module, function = handler.rsplit(".", 1)  # the built template's Handler, resolved as Lambda does
entry = getattr(importlib.import_module(module), function)
result = None if event is None else entry(event, Context())
from_source = sorted(name for name, module in list(sys.modules.items())
                     if (getattr(module, "__file__", None) or "").startswith(source_tree))
import kandji_snapshots
with open(result_file, "w") as out:
    json.dump({"result": result, "from_source": from_source, "package": kandji_snapshots.__file__}, out)
"""


def without(missing: MissingTool):
    """Skip on a developer's machine without the tool; fail in CI, which must never pass without the build."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"build test cannot run in CI: {missing}", pytrace=False)
    pytest.skip(f"build test skipped: {missing}")


@pytest.fixture(scope="session")
def python_313() -> str:
    try:
        return python313()
    except MissingTool as missing:
        without(missing)


@pytest.fixture(scope="session")
def sam_tools(python_313) -> str:
    try:
        sam_cli()
    except MissingTool as missing:
        without(missing)
    return python_313


@pytest.fixture(scope="session")
def build_dir(sam_tools, tmp_path_factory) -> Path:
    """One `sam build` per test session, shared by every xdist worker that runs a test of this module."""
    def build(folder: Path) -> None:
        built = sam_build(folder / "build", sam_tools)
        assert built.returncode == 0, f"sam build failed:\n{built.stdout}\n{built.stderr}"

    return shared_folder(tmp_path_factory, "sam", build) / "build"


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory) -> Path:
    return runtime_packages(tmp_path_factory.mktemp("var-runtime"))


def test_template_passes_sam_validate_lint(sam_tools):
    validated = sam_validate(sam_tools)
    assert validated.returncode == 0, f"{validated.stdout}\n{validated.stderr}"


def test_the_built_template_points_every_function_at_its_built_folder_and_the_layer(build_dir):
    from tests.cfn_yaml import load_template

    resources = load_template(build_dir / "template.yaml")["Resources"]
    assert resources[LAYER]["Properties"]["ContentUri"] == LAYER
    for function, logical_id in FUNCTIONS.items():
        properties = resources[logical_id]["Properties"]
        assert properties["CodeUri"] == logical_id
        module = properties["Handler"].rsplit(".", 1)[0]
        assert (build_dir / logical_id / f"{module.replace('.', '/')}.py").is_file(), properties["Handler"]


def requirement_pins() -> dict[str, str]:
    lines = (ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines]
    return {name.split("[")[0].lower().replace("-", "_"): version
            for name, version in (pin.split("==") for pin in pins if pin)}


def pruned(path: Path) -> bool:
    """What layers/common/Makefile leaves out of a wheel on purpose."""
    return (bool({"tests", "test", "__pycache__", "bin", ".."} & set(path.parts))
            or path.suffix in {".c", ".h", ".pyi", ".pyc"} or path.parts[0].endswith((".data", "-stubs")))


def test_layer_is_lean_complete_and_ships_its_bytecode(build_dir, capsys):
    python_dir = build_dir / LAYER / "python"
    files = [path for path in python_dir.rglob("*") if path.is_file()]
    relative = [path.relative_to(python_dir) for path in files]

    # Every pinned runtime dependency, at its pinned version, and the Lambda code of the package.
    installed = dict(path.name.removesuffix(".dist-info").lower().split("-", 1)
                     for path in python_dir.glob("*.dist-info"))
    for name, version in requirement_pins().items():
        assert installed.get(name) == version, f"layer lacks {name}=={version} (has {installed.get(name)})"
    for record in python_dir.glob("*.dist-info/RECORD"):  # every file each wheel installed, but the pruned ones
        listed = [Path(line.split(",")[0]) for line in record.read_text().splitlines() if line]
        missing = [str(path) for path in listed if not pruned(path) and not (python_dir / path).exists()]
        assert not missing, f"{record.parent.name}: files missing from the layer: {missing[:5]}"
    # query/athena_sql.py: e-mails name the saved Athena query
    for module in ("collect/runtime.py", "diff/runtime.py", "kandji/client.py", "snapshots/storage.py",
                   "query/athena_sql.py", "snapshots/committed.py", "history/runtime.py"):
        assert (python_dir / "kandji_snapshots" / module).is_file(), module

    # Nothing Lambda does not need: operator CLI, DuckDB tooling, tests, C sources, stubs, scripts.
    package = python_dir / "kandji_snapshots"
    for operator_only in ("cli", "query/local_duckdb.py", "history/local_copy.py", "__main__.py"):
        assert not (package / operator_only).exists(), f"kandji_snapshots/{operator_only} ships in the layer"
    stray = [str(p) for p in relative if pruned(p) and p.suffix != ".pyc"]
    assert not stray, f"test folders, C sources, stubs or scripts in the layer: {stray[:5]}"

    # Bytecode for every module, checked by hash never (Lambda's /opt is read-only and zip mtimes change).
    sources = [path for path in files if path.suffix == ".py"]
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        assert compiled.is_file(), f"no bytecode for {source.relative_to(python_dir)}"
        flags = int.from_bytes(compiled.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{compiled.name}: not unchecked-hash bytecode (flags {flags})"

    size = sum(path.stat().st_size for path in files)
    function_size = sum(path.stat().st_size for logical_id in FUNCTIONS.values()
                        for path in (build_dir / logical_id).rglob("*") if path.is_file())
    assert size + function_size < LAMBDA_LIMIT_BYTES
    with capsys.disabled():
        print(f"\n[sam build] layer {LAYER} unzipped: {size / 1e6:.1f} MB in {len(files)} files "
              f"({len(sources)} modules, each with its .pyc)")


def built_handler(build_dir: Path, function: str) -> str:
    from tests.cfn_yaml import load_template

    return load_template(build_dir / "template.yaml")["Resources"][FUNCTIONS[function]]["Properties"]["Handler"]


def run_built(python: str, build_dir: Path, runtime: Path, function: str, event: dict, endpoint: str,
              env: dict[str, str], scratch: Path) -> dict:
    result_file = scratch / f"{function}-{time.monotonic_ns()}.json"
    arguments = json.dumps([lambda_sys_path(build_dir, function, runtime), str(ROOT),
                            built_handler(build_dir, function), event, str(result_file)])
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_ENDPOINT_URL": endpoint, "POWERTOOLS_TRACE_DISABLED": "1"}  # no X-Ray daemon here
    completed = subprocess.run([python, "-S", "-B", "-c", DRIVER, arguments], cwd=scratch,
                               env=lambda_environment(build_dir, function, {**aws, **env}),
                               capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, f"built {function} failed:\n{completed.stdout[-4000:]}\n{completed.stderr}"
    output = json.loads(result_file.read_text())
    assert output["from_source"] == [], f"imported from the source tree: {output['from_source']}"
    assert output["package"].startswith(str(build_dir / LAYER / "python"))
    return output["result"]


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_built_handler_resolves_from_the_artifacts_alone(python_313, build_dir, runtime_dir, function,
                                                                tmp_path):
    """Lambda's init for each function: its Handler imported with only the built code on sys.path."""
    run_built(python_313, build_dir, runtime_dir, function, None, "http://127.0.0.1:9", {}, tmp_path)


def test_built_collector_and_differ_commit_a_snapshot_and_publish_the_change(
        python_313, build_dir, runtime_dir, aws, tmp_path):
    create_bucket()
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="kandji-snapshots-changes")["TopicArn"]
    queue = subscribe_queue(topic, "changes-built")
    fleet = Fleet.generate(40, seed=12)
    sim = KandjiSimulator(fleet, token=TOKEN).start()
    secret = create_secret(json.dumps({"api_url": sim.api_url, "api_token": TOKEN}))
    env = {"SNAPSHOT_BUCKET": BUCKET, "KANDJI_SECRET_ID": secret, "KANDJI_ALLOW_INSECURE_LOCALHOST": "true",
           "KANDJI_MAX_REQUESTS_PER_SECOND": "1000", "CHANGES_TOPIC_ARN": topic, "MAX_EVENTS_PER_RUN": "500"}
    scheduler_event = json.loads((ROOT / "events" / "scheduler_event.json").read_text())

    def run(function: str, event: dict) -> dict:
        return run_built(python_313, build_dir, runtime_dir, function, event, aws, env, tmp_path)

    try:
        first = run("collector", scheduler_event)
        made = fleet.apply_demo_changes()
        second = run("collector", scheduler_event)
    finally:
        sim.stop()
    committed = {m["snapshot_id"]: m for m in manifests()}
    assert set(committed) == {first["snapshot_id"], second["snapshot_id"]}

    trigger = json.loads((ROOT / "events" / "manifest_created_event.json").read_text())
    manifest = committed[second["snapshot_id"]]
    trigger["detail"]["bucket"]["name"] = BUCKET
    trigger["detail"]["object"]["key"] = \
        f"snapshots/manifests/dt={manifest['dt']}/{manifest['snapshot_id']}/manifest.json"
    diffed = run("differ", trigger)
    assert diffed["previous_snapshot_id"] == first["snapshot_id"] and diffed["events"] == 6

    published = [json.loads(message["Body"]) for message in drain_queue(queue, sqs)]
    found = {(e["change_type"], e.get("device_id")) for e in published}
    assert found == {("snapshot_summary", None),
                     ("device_added", made["enrolled"]["device_id"]),
                     ("device_removed", made["removed"]["device_id"]),
                     ("device_changed", made["os_updated"]["device_id"]),
                     ("app_installed", made["app_installed"]["device_id"]),
                     ("app_updated", made["app_updated"]["device_id"]),
                     ("device_changed", made["filevault_disabled"]["device_id"])}
    assert TOKEN not in json.dumps(published)


def test_samconfig_example_deploys_arm64_template_parameters_and_holds_no_account_or_secret(sam):
    import re
    import tomllib

    text = (ROOT / "samconfig.example.toml").read_text()
    config = tomllib.loads(text)
    deploy = config["default"]["deploy"]["parameters"]
    assert not re.search(r"(?<!\d)\d{12}(?!\d)", text), "no account id in the example"
    assert "arn:" not in text and "api_token" not in text, "no ARN or credential in the example"
    overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
    assert set(overrides) <= set(sam["Parameters"]), f"unknown parameters: {set(overrides) - set(sam['Parameters'])}"
    assert "CAPABILITY_IAM" in deploy["capabilities"]
    assert not (ROOT / ".gitignore").read_text().count("samconfig.example"), "the example is committed"
    for logical_id in (LAYER, *FUNCTIONS.values()):  # what docs/deploy.md states: arm64 everywhere
        resource = sam["Resources"][logical_id]
        architecture = resource["Properties"].get("CompatibleArchitectures") or \
            sam["Globals"]["Function"]["Architectures"]
        assert architecture == ["arm64"], logical_id
