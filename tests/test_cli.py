"""The operator CLI (`python -m kandji_snapshots check|collect|diff`) against the simulator over HTTP on
127.0.0.1, and S3 from moto. Most tests call `cli.main(argv)`; one goes through `python -m`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from aws_helpers import create_secret
from kandji_fakes import simulator_client

from kandji_snapshots.cli import main as cli
from kandji_snapshots.cli.progress import ProgressBar
from kandji_snapshots.errors import KandjiApiError
from kandji_snapshots.kandji.config import EXPECTED_FORM
from simulator import Fleet, KandjiSimulator

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "kst-cli-5e4d3c2b1a-operator-token"
BUCKET = "kandji-snapshots-cli-test"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Nothing from the developer's shell: no token, URL or insecure flag unless a test sets it."""
    for name in ("KANDJI_API_TOKEN", "KANDJI_API_URL", "KANDJI_ALLOW_INSECURE_LOCALHOST", "DIFF_IGNORE_FIELDS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def simulator():
    """Returns a function starting a simulator (stopped after the test)."""
    started = []

    def start(devices: int = 12, **options) -> KandjiSimulator:
        options.setdefault("token", TOKEN)
        sim = KandjiSimulator(Fleet.generate(devices, seed=4), **options).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err  # never, whatever the command or its outcome
    return code, out, err


@pytest.fixture
def check(capsys, monkeypatch):
    """Runs `check` on a simulator as an operator would: the token in KANDJI_API_TOKEN (`token`; None when the test
    gives it another way), plain http to the simulator on 127.0.0.1 allowed."""

    def run_check(sim: KandjiSimulator, *extra: str, token: str | None = TOKEN) -> tuple[int, str, str]:
        if token is not None:
            monkeypatch.setenv("KANDJI_API_TOKEN", token)
        return run(capsys, "check", "--url", sim.base_url, "--allow-insecure-localhost", *extra)

    return run_check


# --- check ------------------------------------------------------------------------------------------

def test_check_with_every_permission_is_ready(simulator, check):
    sim = simulator(12)
    code, out, err = check(sim)
    assert code == 0, err
    for permission in ("GET /devices (Device list)", "GET /devices/{device_id}/details (Device details)",
                       "GET /devices/{device_id}/apps (Device apps)", "GET /prism/apps (Prism: apps)"):
        assert f"present   {permission}" in out
    assert "devices     12 (from /prism/count?category=devices, 1 request)" in out
    assert "of 10,000 requests left this hour" in out
    assert ("44 requests (2 x 12 devices for details and apps + 2 list pages + 12 for 6 Prism posture categories "
            "+ 6 for the tenant sources)") in out
    assert "present   GET /audit/events (Audit log)" in out and "present   GET /blueprints (Blueprints)" in out
    assert "fits in one run" in out and "result      ready" in out
    assert "from KANDJI_API_TOKEN" in out
    # One request per endpoint, posture category and tenant source, plus the two Prism counts; a list page of
    # one device only.
    assert "present   GET /prism/startup_settings (Prism: startup settings)" in out
    assert "to read them" not in out
    assert sim.stats.requests == 18 and f"this check  {sim.stats.requests} requests" in out
    assert sim.stats.by_endpoint["devices"] == 1


def test_check_names_a_missing_permission_and_counts_by_paging(simulator, check):
    sim = simulator(12, permissions={"devices", "details"})
    code, out, err = check(sim)
    assert code == 1
    assert "MISSING   GET /devices/{device_id}/apps (Device apps): 403 Forbidden" in out
    assert "missing   GET /prism/apps (Prism: apps) (optional)" in out
    assert "present   GET /devices/{device_id}/details (Device details)" in out
    assert "devices     12 (counted by paging /devices: 2 requests, one per 300 devices)" in out
    assert "NOT ready: the token lacks Device apps (GET /devices/{device_id}/apps)" in out
    # Posture categories are optional: named with the permission to add, never what makes it not ready.
    assert "missing   GET /prism/application_firewall (Prism: application firewall): 403: runs skip this " \
           "category" in out
    assert "to read them, add GET /prism/device_information (Prism: device information), " in out


def test_check_without_posture_permissions_is_still_ready(simulator, check):
    sim = simulator(12, permissions={"devices", "details", "apps", "prism", "prism_filevault"})
    code, out, _ = check(sim)
    assert code == 0 and "result      ready" in out
    assert "present   GET /prism/filevault (Prism: filevault)" in out
    assert "missing   GET /prism/startup_settings (Prism: startup settings): 403: runs skip this category" in out


def test_check_prices_posture_by_the_rows_each_category_has_and_the_categories_the_token_may_read(simulator, check):
    sim = simulator(700, permissions={"devices", "details", "apps", "prism", "prism_device_information"})
    code, out, _ = check(sim)
    assert code == 0
    # device_information: 700 rows in pages of 300 = 3, and 1 proving the end;
    # the five others are refused, one request each.
    # The tenant sources the token may not read cost their one refused request each.
    assert "full run    1,418 requests (2 x 700 devices for details and apps + 3 list pages + 9 for 6 Prism " \
           "posture categories + 6 for the tenant sources)" in out
    assert "missing   GET /audit/events (Audit log), about 1 request(s) a run: 403: runs skip this source" in out
    assert "posture counted at Prism's full pages of 300 rows" in out and "at 25 rows a page it costs 37" in out


def test_check_with_prism_as_apps_source_needs_prism_not_device_apps(simulator, check):
    sim = simulator(12, permissions={"devices", "details", "prism"})
    code, out, _ = check(sim, "--apps-source", "prism")
    assert code == 0 and "missing   GET /devices/{device_id}/apps (Device apps) (optional)" in out
    assert "requests with --apps-source prism" in out


def test_check_with_a_wrong_token_says_401_and_stops(simulator, check):
    sim = simulator(12)
    code, out, err = check(sim, token="not-the-token")
    assert code == 1
    assert "error: GET /api/v1/devices answered 401 Unauthorized: the API token is wrong, revoked or expired" in err
    assert "Traceback" not in err and "not-the-token" not in out + err
    assert sim.stats.requests == 1  # stopped after the first answer


def test_a_bad_token_file_is_named_as_the_file_not_as_the_lambdas_secret(capsys, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text('{"api_token": ')
    token_file.chmod(0o600)
    code, _, err = run(capsys, "check", "--url", "https://acme.api.kandji.io", "--token-file", str(token_file))
    assert code == 1 and f"The token from file {token_file} starts with '{{' but is not valid JSON" in err
    assert "Kandji secret" not in err


def test_collect_with_a_wrong_token_tells_the_operator_what_to_do_at_the_terminal(simulator, capsys, monkeypatch,
                                                                                  tmp_path):
    sim = simulator(3)
    monkeypatch.setenv("KANDJI_API_TOKEN", "not-the-token")
    code, _, err = run(capsys, "collect", "--url", sim.base_url, "--allow-insecure-localhost", "-o", str(tmp_path))
    assert code == 1 and "answered 401 Unauthorized" in err
    assert "pass it with --token-file, --secret-id or KANDJI_API_TOKEN" in err
    assert "Kandji secret" not in err and "scheduled run" not in err  # the Lambda's next steps, not the operator's
    assert not (tmp_path / "snapshots").exists()


@pytest.mark.parametrize("url, extra, expected", [
    ("{base}/api/v2/", ["--allow-insecure-localhost"], "only the root or /api/v1/ is accepted"),
    ("{base}", [], "must use https://"),
    ("https://acme.kandji.io", [], "the API URL is probably https://acme.api.kandji.io"),
    ("https://acme.api.kandji.io.evil.example", [], "is not a Kandji tenant API host"),
])
def test_check_refuses_a_bad_url_form_before_any_request(simulator, capsys, monkeypatch, url, extra, expected):
    sim = simulator(3)
    monkeypatch.setenv("KANDJI_API_TOKEN", TOKEN)
    code, out, err = run(capsys, "check", "--url", url.format(base=sim.base_url), *extra)
    assert code == 1 and expected in err and EXPECTED_FORM in err
    assert err.startswith("error: ") and "Traceback" not in err
    assert sim.stats.requests == 0


def test_check_reads_the_token_from_a_file(simulator, tmp_path, check):
    sim = simulator(5)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    code, out, err = check(sim, "--token-file", str(token_file), token=None)
    assert code == 0 and f"from file {token_file}" in out and err == ""
    assert sim.tokens_seen == {f"Bearer {TOKEN}"}


def test_check_reads_the_token_from_a_prompt(simulator, monkeypatch, check):
    sim = simulator(5)
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: asked.append(prompt) or TOKEN)
    monkeypatch.setattr("sys.stdin", type("Terminal", (io.StringIO,), {"isatty": lambda self: True})())
    code, out, _ = check(sim, token=None)
    assert code == 0 and asked and "from prompt" in out


def test_check_reads_the_secret_like_the_lambda(simulator, capsys, aws):
    sim = simulator(5)
    arn = create_secret(json.dumps({"api_url": sim.base_url, "api_token": TOKEN}))
    code, out, err = run(capsys, "check", "--secret-id", arn, "--allow-insecure-localhost")
    assert code == 0, err
    assert f"from secret {arn}" in out and sim.api_url in out


def test_a_token_on_the_command_line_is_refused_without_echoing_it(capsys):
    code, out, err = run(capsys, "check", "--url", "https://acme.api.kandji.io", "--token", TOKEN)
    assert code == 2 and "never taken on the command line" in err


def test_no_token_anywhere_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt
    code, _, err = run(capsys, "check", "--url", "https://acme.api.kandji.io")
    assert code == 2 and "No API token" in err and "KANDJI_API_TOKEN" in err


def test_check_reports_an_exhausted_rate_limit(simulator, check):
    sim = simulator(5)
    sim.hour_used = 10_000  # other integrations spent the hour
    code, _, err = check(sim)
    assert code == 1 and "answered 429 Too Many Requests (0 requests left this hour" in err
    assert "rate limit is spent" in err


def test_check_says_when_the_api_does_not_report_its_limit(simulator, check):
    sim = simulator(5, send_rate_limit_headers=False)
    code, out, _ = check(sim)
    assert code == 0 and "rate limit  not reported by the API" in out


def test_check_names_the_missing_permission_as_a_cause_of_a_401(simulator, check):
    """Kandji answers 401 to a token stripped of its permissions: `check` says so, as the collector does."""
    sim = simulator(5, permissions=set())
    code, _, err = check(sim)
    assert code == 1
    assert "answered 401 Unauthorized: the API token is wrong, revoked or expired, or it lacks the permission " \
           "GET /devices (Device list) (Kandji answers 401 for both)" in err
    assert "create a new token and pass it with --token-file, --secret-id or KANDJI_API_TOKEN" in err


def test_check_and_the_collector_give_a_redirect_the_same_cause_and_fix(simulator, check):
    sim = simulator(5)
    sim.faults.fail(r"/devices$", status=302, headers={"Location": "https://login.example/"}, times=None)
    code, _, err = check(sim)
    client = simulator_client(sim, TOKEN)
    with pytest.raises(KandjiApiError) as collector:
        client.list_devices()
    advice = (f"{client.host} is not the API host (the collector never follows redirects, so the token never leaves "
              "the tenant's host). Use the API URL shown in Kandji (Settings > Access > API URL).")
    assert code == 1 and f"answered a 302 redirect to https://login.example/: {advice}" in err
    assert str(collector.value) == f"GET /api/v1/devices answered a 302 redirect: {advice}"


def test_check_explains_a_404_as_a_wrong_tenant_or_region(simulator, check):
    sim = simulator(5)
    sim.faults.fail(r"/devices$", status=404, body="<h1>Not Found</h1>", times=None)
    code, _, err = check(sim)
    assert code == 1 and "answered 404 Not Found on 127.0.0.1" in err and "api.eu.kandji.io" in err


def test_the_full_run_cost_is_compared_with_the_budget():
    lines = "\n".join(cli.cost_lines(5_000, None, 10_000, 9_000, 45))
    assert "10,125 requests (2 x 5,000 devices for details and apps + 17 list pages + 108 for 6 Prism posture " \
           "categories)" in lines
    assert "at 25 rows a page it costs 1,314" in lines
    assert "more than one run may spend (8,000" in lines and "after the list and posture (125)" in lines
    assert "about every 2 runs" in lines


def test_posture_decides_whether_a_fleet_fits_in_one_run_and_what_a_run_can_refresh_now():
    # 3,970 devices: 7,940 for details and apps + 14 list pages would fit in 8,000; the 90 posture requests do not.
    lines = cli.cost_lines(3_970, 120_000, 10_000, 3_000, 45)
    assert lines[0].startswith("full run    8,044 requests (2 x 3,970 devices for details and apps + 14 list pages "
                               "+ 90 for 6 Prism posture categories)")
    assert "fits in one run" not in "\n".join(lines)
    assert "after the list and posture (104) each run refreshes" in lines[2] and "about every 2 runs" in lines[2]
    # 3,000 left, 1,000 kept in reserve, 98 for the list and posture: (3,000 - 1,000 - 98) // 2 devices
    assert "right now only 3,000 are left this hour: a run now would refresh about 948 devices" in lines[3]
    # details per device + the list and posture + 400 pages of 300 app rows
    assert lines[4].strip().startswith("4,478 requests with --apps-source prism")
    assert "fits in one run" in cli.cost_lines(3_900, None, 10_000, None, 45)[2]  # 7,800 + 14 + 78 = 7,892


# --- collect and diff ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_snapshots(tmp_path_factory):
    """Two collects into one folder with the fleet's demo changes in between (the CLI's own output kept)."""
    folder = tmp_path_factory.mktemp("collected")
    token_file = tmp_path_factory.mktemp("secrets") / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    fleet = Fleet.generate(30, seed=9)
    runs = []
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        argv = ["collect", "--url", sim.base_url, "--allow-insecure-localhost", "--token-file", str(token_file),
                "--output", str(folder), "--max-requests-per-second", "1000", "--progress"]
        for step in range(2):
            if step:
                changes = fleet.apply_demo_changes()
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(argv)
            runs.append((code, out.getvalue(), err.getvalue()))
    return folder, runs, changes, fleet


def snapshot_ids(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "snapshots" / "manifests").glob("dt=*/*"))


def expected_events(changes: dict) -> set[tuple[str, str]]:
    return {("device_added", changes["enrolled"]["device_id"]),
            ("device_removed", changes["removed"]["device_id"]),
            ("device_changed", changes["os_updated"]["device_id"]),
            ("device_changed", changes["filevault_disabled"]["device_id"]),
            ("app_installed", changes["app_installed"]["device_id"]),
            ("app_updated", changes["app_updated"]["device_id"])}


def test_collect_writes_a_snapshot_and_prints_where(two_snapshots):
    folder, runs, _, _ = two_snapshots
    ids = snapshot_ids(folder)
    assert len(ids) == 2
    for (code, out, err), snapshot_id in zip(runs, ids):
        assert code == 0, err
        assert f"snapshot    {snapshot_id}" in out and f"folder      {folder}" in out
        assert "30 refreshed, 0 carried forward, 0 pending, 0 skipped" in out
        assert "devices [############################] 30/30 100%" in err  # the progress bar, on stderr
    manifest = json.loads(next((folder / "snapshots" / "manifests").glob(f"dt=*/{ids[0]}/manifest.json")).read_text())
    assert manifest["device_count"] == 30 and manifest["correlation_id"] == "cli"


def test_diff_prints_the_changes_as_a_table(two_snapshots, capsys):
    folder, _, changes, fleet = two_snapshots
    first, second = snapshot_ids(folder)
    code, out, err = run(capsys, "diff", str(folder))
    assert code == 0, err
    assert out.splitlines()[0] == f"changes from {first} to {second} in {folder}"
    assert ("6 changes (2 high): device_added 1, device_removed 1, device_changed 2, app_installed 1, "
            "app_updated 1") in out
    assert "filevault.filevault_enabled: true -> false" in out  # high once: on posture.filevault.status
    assert "Demo Tool (com.example.demo-tool) 1.0.0" in out
    updated = changes["app_updated"]
    assert f"{updated['before']} -> {updated['after']}" in out
    assert f'os_version: "{changes["os_updated"]["before"]}" -> "{changes["os_updated"]["after"]}"' in out
    assert changes["removed"]["serial_number"] in out


def test_diff_as_json_lines_gives_the_differs_events(two_snapshots, capsys):
    folder, _, changes, _ = two_snapshots
    first, second = snapshot_ids(folder)
    code, out, _ = run(capsys, "diff", str(folder), "--json", "--from", first, "--to", second)
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {(event["change_type"], event["device_id"]) for event in events} == expected_events(changes)
    assert all(event["snapshot_id"] == second and event["previous_snapshot_id"] == first for event in events)
    # The same two snapshots the other way round: what was added is now removed.
    code, out, _ = run(capsys, "diff", str(folder), "--json", "--from", second, "--to", first)
    backwards = {(event["change_type"], event["device_id"]) for event in map(json.loads, out.splitlines())}
    assert ("device_removed", changes["enrolled"]["device_id"]) in backwards


def test_diff_of_snapshots_in_s3(two_snapshots, capsys, aws):
    folder, _, changes, _ = two_snapshots
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for path in folder.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, path.relative_to(folder).as_posix())
    code, out, err = run(capsys, "diff", f"s3://{BUCKET}", "--json")
    assert code == 0, err
    assert {(event["change_type"], event["device_id"]) for event in map(json.loads, out.splitlines())} == \
        expected_events(changes)
    code, out, _ = run(capsys, "diff", f"s3://{BUCKET}")
    assert code == 0 and f"in s3://{BUCKET}" in out and "6 changes (2 high)" in out
    assert [key for key in (item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
            if key.startswith("changes/")] == []  # a diff publishes and writes nothing


def test_diff_errors_are_one_line_each(two_snapshots, capsys, tmp_path):
    folder, _, _, _ = two_snapshots
    first, _ = snapshot_ids(folder)
    code, _, err = run(capsys, "diff", str(folder), "--to", first)
    assert code == 1 and err == f"error: {first} is the first snapshot in {folder}: there is nothing before it " \
                                "to compare it with. Collect again later, or give --from.\n"
    code, _, err = run(capsys, "diff", str(folder), "--from", "20200101T000000Z")
    assert code == 1 and "no committed snapshot with that id" in err and first in err
    code, _, err = run(capsys, "diff", str(folder), "--from", "yesterday")
    assert code == 2 and "is not a snapshot id" in err
    code, _, err = run(capsys, "diff", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a folder" in err and "Traceback" not in err  # the command line is wrong: 2


def _copy_with_api_host(folder: Path, target: Path, api_host: str | None) -> Path:
    """A copy of a collected folder whose latest snapshot says it came from `api_host` (None: as it is)."""
    shutil.copytree(folder, target)
    if api_host is not None:
        manifest = sorted((target / "snapshots" / "manifests").glob("dt=*/*/manifest.json"))[-1]
        document = json.loads(manifest.read_text())
        document["api_host"] = api_host
        manifest.write_text(json.dumps(document))
    return target


def test_collect_refuses_a_folder_of_another_tenant(two_snapshots, capsys, monkeypatch, simulator, tmp_path):
    folder = _copy_with_api_host(two_snapshots[0], tmp_path / "acme", "acme.api.kandji.io")
    sim = simulator(3)
    monkeypatch.setenv("KANDJI_API_TOKEN", TOKEN)
    code, _, err = run(capsys, "collect", "--url", sim.base_url, "--allow-insecure-localhost", "-o", str(folder))
    assert code == 1 and "holds snapshots of acme.api.kandji.io" in err and "one folder holds one tenant" in err
    assert sim.stats.requests == 0


def test_collect_takes_a_local_simulator_on_another_port_for_the_same_tenant(two_snapshots, capsys, monkeypatch,
                                                                             simulator, tmp_path):
    folder = _copy_with_api_host(two_snapshots[0], tmp_path / "local", None)
    sim = simulator(30)  # a new simulator: a new port on 127.0.0.1, and a fleet no smaller than the folder's
    previous_host = json.loads(sorted((folder / "snapshots" / "manifests").glob("dt=*/*/manifest.json"))[-1]
                               .read_text())["api_host"]
    assert previous_host.startswith("127.0.0.1:") and previous_host != f"127.0.0.1:{sim.port}"
    monkeypatch.setenv("KANDJI_API_TOKEN", TOKEN)
    code, _, err = run(capsys, "collect", "--url", sim.base_url, "--allow-insecure-localhost", "-o", str(folder),
                       "--max-requests-per-second", "1000")
    assert code == 0, err
    assert len(snapshot_ids(folder)) == 3


def test_progress_bar_redraws_in_place_on_a_terminal():
    stream, now = io.StringIO(), [0.0]
    bar = ProgressBar(stream, interactive=True, clock=lambda: now[0])
    for done in range(0, 101):
        now[0] = done * 0.05
        bar(done, 100)
    bar.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("100/100 100%  0:05\n")
    assert text.count("\r") < 60  # throttled: at most ten redraws a second


# --- the entry point -----------------------------------------------------------------------------------

def test_python_dash_m_entry_point(simulator):
    sim = simulator(5)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common"), "KANDJI_API_TOKEN": TOKEN}
    result = subprocess.run([sys.executable, "-m", "kandji_snapshots", "check", "--url", sim.base_url,
                             "--allow-insecure-localhost"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "result      ready" in result.stdout and TOKEN not in result.stdout + result.stderr
    usage = subprocess.run([sys.executable, "-m", "kandji_snapshots"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "check" in usage.stderr and "collect" in usage.stderr


# --- values from the fleet and from the command line, printed safely (issue 19.10, 19.11) -----------------

# A user renames their Mac: clear the screen, an OSC 8 link, a C1 CSI, a bidi override, a bell.
ESCAPING_NAME = ("Mac\x1b[2J\x1b[H\x1b]8;;https://evil.example/\x07click me\x1b]8;;\x07\x9b31m\u202eexe.txt\x07"
                 + "y" * 40)
TERMINAL_ACTIVE = ("\x1b", "\x07", "\x9b", "\u202e")


@pytest.fixture
def renamed_fleet_folder(tmp_path):
    from differ_fixtures import FakeFleet

    from kandji_snapshots.snapshots.storage import LocalObjectStore

    store = LocalObjectStore(tmp_path)
    fleet = FakeFleet.of(2)
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)  # the latest_* views read the last three days
    fleet.collect(store, hour=10, on=yesterday)
    fleet.devices["id-001"]["device_name"] = ESCAPING_NAME
    fleet.apps["id-000"][0]["app_name"] = "App\x1b]8;;https://evil.example/\x07"
    fleet.apps["id-000"][0]["version"] = "121.0"
    fleet.collect(store, hour=11, on=yesterday)
    return tmp_path


def test_diff_prints_no_terminal_escape_from_a_device_or_app_name(renamed_fleet_folder, capsys):
    code, out, err = run(capsys, "diff", str(renamed_fleet_folder))
    assert code == 0, err
    assert not any(char in out + err for char in TERMINAL_ACTIVE), repr(out)
    assert "device_name" in out and "Mac [2J [H ]8;;https://" in out  # shown, inert
    code, out, err = run(capsys, "diff", str(renamed_fleet_folder), "--json")
    assert code == 0, err
    assert not any(char in out for char in TERMINAL_ACTIVE), repr(out)
    events = [json.loads(line) for line in out.splitlines()]  # still JSON: the escapes are JSON's own
    assert any(change.get("after") == ESCAPING_NAME for event in events for change in event.get("changes") or [])


def test_query_prints_no_terminal_escape_from_a_device_name(renamed_fleet_folder, capsys):
    pytest.importorskip("duckdb")
    code, out, err = run(capsys, "query", str(renamed_fleet_folder), "--query", "latest_inventory")
    assert code == 0, err
    assert not any(char in out + err for char in TERMINAL_ACTIVE), repr(out)
    assert "Mac [2J [H" in out


@pytest.mark.parametrize("argv", [
    ["check", "--url", "https://acme.api.kandji.io", "--api-token", TOKEN],
    ["check", "--url", "https://acme.api.kandji.io", f"--api-token={TOKEN}"],
    ["check", "--url", "https://acme.api.kandji.io", TOKEN],  # pasted alone
    ["collect", "--url", "https://acme.api.kandji.io", "--output", "x", TOKEN, "--secret", TOKEN],
    ["check", "--apps-source", TOKEN],  # a value argparse quotes back
])
def test_a_token_typed_where_argparse_does_not_expect_it_is_never_echoed(capsys, argv):
    code, out, err = run(capsys, *argv)  # run() fails if the token is in the output
    assert code == 2 and err.startswith("error: ") and "--help" in err, err
    if "--api-token" in " ".join(argv):
        assert "unrecognized option --api-token" in err


@pytest.mark.parametrize("argv, message", [
    (["--param", "bundle_ic=com.google.Chrome", "--query", "app_version_spread"], "takes no parameter 'bundle_ic'"),
    (["--param", "bundle_id", "--query", "app_version_spread"], "is not NAME=VALUE"),
    (["--param", "nonsense=1"], "any query takes no parameter 'nonsense'"),
    (["--query", "filevault_off", "--param", "bundle_id=x"], "--query filevault_off takes no parameter 'bundle_id'"),
    (["--query", "device_change_history"], "needs --param serial_number=VALUE"),
    (["--query", "app_version_spread"], "needs --param bundle_id=VALUE"),
    (["--query", "not_checked_in", "--param", "days=two weeks"], "a whole number of days"),
])
def test_query_refuses_parameters_it_would_ignore_or_need(renamed_fleet_folder, capsys, argv, message):
    pytest.importorskip("duckdb")
    code, out, err = run(capsys, "query", str(renamed_fleet_folder), *argv)
    assert code == 2 and message in err and out == "", err


def test_query_help_lists_each_querys_parameters(capsys):
    code, out, _ = run(capsys, "query", "--help")
    assert code == 0
    assert "app_version_spread" in out
    assert "--param bundle_id=...  (required; for example bundle_id=com.google.Chrome)" in out
    assert "--param serial_number=...  (required" in out and "--param days=...  (default 14" in out


def test_query_without_a_query_skips_those_needing_a_parameter(renamed_fleet_folder, capsys):
    pytest.importorskip("duckdb")
    code, out, err = run(capsys, "query", str(renamed_fleet_folder))
    assert code == 0, err
    assert "== Kandji: change history of one device: not run, it needs --param serial_number=..." in out
    assert "C02XXXXXXXXX]" not in out  # never answered for the example


def test_a_damaged_file_is_one_readable_line_not_a_duckdb_exception(renamed_fleet_folder, capsys):
    pytest.importorskip("duckdb")
    [part] = list((renamed_fleet_folder / "snapshots" / "devices").glob("dt=*/*T110000Z*.json.gz"))  # the latest
    part.write_bytes(b"not gzip at all")
    code, out, err = run(capsys, "query", str(renamed_fleet_folder), "--query", "latest_inventory")
    assert code == 1 and err.startswith(f"error: {renamed_fleet_folder}: DuckDB could not answer: ")
    assert err.count("\n") == 1 and "Traceback" not in err and "Exception:" not in err.split("answer:")[0]


def test_a_legacy_eu_tenant_url_is_accepted(capsys, monkeypatch, tmp_path):
    """`https://<tenant>.clients.eu.kandji.io`, the EU twin of .clients.us-1.kandji.io: `check` gets past the URL
    to the token (here: none given, a usage error), where before it refused the host."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "check", "--url", "https://acme.clients.eu.kandji.io/api/v1/")
    assert code == 2 and "No API token" in err and "not a Kandji tenant API host" not in err
    token_file = tmp_path / "token"
    token_file.write_text(json.dumps({"api_url": "https://acme.clients.eu.kandji.io", "api_token": TOKEN}))
    from kandji_snapshots.cli.console import Console
    from kandji_snapshots.cli.credentials import resolve_credentials
    args = cli.build_parser().parse_args(["check", "--token-file", str(token_file)])
    credentials, _ = resolve_credentials(args, Console(), {})
    assert credentials.endpoint.api_root == "https://acme.clients.eu.kandji.io/api/v1/"
