"""`check`: call each endpoint the collector needs once, without retries, and report the token's
permissions, the device count, the rate-limit headroom and what a full run would cost."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from kandji_snapshots.cli.console import Console, for_terminal
from kandji_snapshots.cli.cost import cost_lines
from kandji_snapshots.cli.credentials import other_region, resolve_credentials
from kandji_snapshots.cli.posture_check import CategoryProbe, posture_lines, probe_posture
from kandji_snapshots.cli.progress import format_duration
from kandji_snapshots.cli.rate_limit import RateHeaders
from kandji_snapshots.cli.tenant_check import SourceProbe, probe_tenant_sources, tenant_lines
from kandji_snapshots.errors import KandjiSnapshotsError
from kandji_snapshots.kandji.client import KandjiClient, RetryPolicy, int_header, rate_limit_wait
from kandji_snapshots.kandji.config import path_segment
from kandji_snapshots.kandji.paging import PAGE_LIMIT
from kandji_snapshots.kandji.permissions import PERMISSIONS, permission_for
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from kandji_snapshots.kandji.status_advice import (
    API_URL_SETTING,
    NOT_THE_API,
    PERMISSION_MISSING,
    REDIRECTED,
    TOKEN_REFUSED,
)

PLACEHOLDER_DEVICE_ID = "00000000-0000-0000-0000-000000000000"
TOKEN_SETTINGS = "Kandji > Settings > Access > API Token > Manage API Permissions"
# The device count pages with the collector's client: a few quick retries, never minutes of them.
CHECK_RETRY = RetryPolicy(max_attempts=3, max_rate_limited_attempts=3, max_backoff=5.0, read_timeout=30.0)


# --- talking to the API, one request at a time ------------------------------------------------------

@dataclass
class Answer:
    path: str
    endpoint: str  # the permission key it needs (permissions.py), e.g. devices, details, prism
    status: int | None  # None: no HTTP answer at all (`problem` says why)
    body: Any = None
    is_json: bool = False
    headers: Mapping[str, str] | None = None
    problem: str | None = None

    @property
    def where(self) -> str:
        return f"GET /api/v1/{self.path}"


class CheckStopped(Exception):
    """The check cannot go on (bad token, wrong host, rate limit spent): the message says why."""


class ApiProbe:
    """Single GETs through the collector's own client (same session, headers, pacing, no redirects), without
    its retries: one short wait for a per-second 429, and every answer kept for the report."""

    def __init__(self, client: KandjiClient, *, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.host = client.host
        self._sleep = sleep

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, endpoint: str | None = None) -> Answer:
        endpoint = endpoint or path.split("/")[0]
        for attempt in (1, 2):
            try:
                response = self.client.send(endpoint, path, dict(params or {}))
            except requests.exceptions.SSLError:
                return Answer(path, endpoint, None,
                              problem=f"the TLS handshake with {self.host} failed: it is not the Kandji API, or "
                                      "something intercepts HTTPS on this network")
            except requests.exceptions.Timeout:
                return Answer(path, endpoint, None,
                              problem=f"{self.host} did not answer within {CHECK_RETRY.read_timeout:g} s")
            except requests.exceptions.ConnectionError as error:
                text = str(error)
                if any(sign in text for sign in ("NameResolution", "Name or service not known", "getaddrinfo",
                                                 "nodename nor servname", "No address associated")):
                    why = f"the host name {self.host} does not resolve"
                else:
                    why = f"could not connect to {self.host} (refused or reset)"
                return Answer(path, endpoint, None, problem=why)
            except requests.exceptions.RequestException as error:
                return Answer(path, endpoint, None, problem=f"{type(error).__name__} talking to {self.host}")
            if response.status_code == 429 and attempt == 1:
                wait = rate_limit_wait(response.headers)
                hour_left = int_header(response.headers, "x-ratelimit-remaining-hour")
                if wait is not None and wait <= 5 and hour_left != 0:
                    self._sleep(wait)  # the per-second window: worth one wait
                    continue
            try:
                body, is_json = response.json(), True
            except ValueError:
                body, is_json = None, False
            return Answer(path, endpoint, response.status_code, body, is_json, response.headers)
        raise AssertionError("unreachable")


# --- what the answers say ---------------------------------------------------------------------------

@dataclass
class PermissionResult:
    key: str  # devices, details, apps, prism
    state: str  # present, missing, unknown
    note: str = ""

    @property
    def label(self) -> str:
        return PERMISSIONS[self.key]

    @property
    def short(self) -> str:
        return self.label.rsplit("(", 1)[-1].rstrip(")")


def required_permissions(apps_source: str) -> tuple[set[str], list[set[str]]]:
    """(always required, groups of which one is enough) for an apps source."""
    if apps_source == "prism":
        return {"devices", "details", "prism"}, []
    if apps_source == "auto":
        return {"devices", "details"}, [{"apps", "prism"}]
    return {"devices", "details", "apps"}, []


@dataclass(frozen=True)
class Refusals:
    """The answers after which nothing else can be learned, worded for where the token came from."""

    host: str
    token_source: str

    def stop_for(self, answer: Answer) -> CheckStopped | None:
        where = answer.where
        if answer.status is None:
            return CheckStopped(f"{where}: {answer.problem}. Check the tenant name and region in the API URL "
                                f"({API_URL_SETTING}) and this machine's network.")
        if answer.status == 401:
            store = ("store it in the secret" if self.token_source.startswith("secret")
                     else "pass it with --token-file, --secret-id or KANDJI_API_TOKEN")
            return CheckStopped(TOKEN_REFUSED.message(where, permission=permission_for(answer.endpoint), store=store)
                                + self._other_region())
        if answer.status == 429:
            return CheckStopped(_rate_limit_spent(answer))
        if 300 <= answer.status < 400:
            location = (answer.headers or {}).get("Location", "")
            return CheckStopped(REDIRECTED.message(where, status=answer.status, host=self.host,
                                                   to=f" to {location}" if location else ""))
        return None

    def raise_if_final(self, answer: Answer) -> None:
        stop = self.stop_for(answer)
        if stop:
            raise stop

    def not_the_api(self, answer: Answer) -> CheckStopped:
        return CheckStopped(NOT_THE_API.message(answer.where, host=self.host) + self._other_region())

    def _other_region(self) -> str:
        other = other_region(self.host)
        return f" If the tenant is in the other region, the API host is {other}." if other else ""


def _rate_limit_spent(answer: Answer) -> str:
    headers = answer.headers or {}
    left = int_header(headers, "x-ratelimit-remaining-hour")
    wait = rate_limit_wait(headers)
    detail = []
    if left is not None:
        detail.append(f"{left:,} requests left this hour")
    if wait is not None:
        detail.append(f"retry after {format_duration(wait)}")
    extra = f" ({', '.join(detail)})" if detail else ""
    return (f"{answer.where} answered 429 Too Many Requests{extra}: the tenant's rate limit is spent, by this or "
            "other integrations (10,000 requests an hour per tenant, shared). A collector run now would fail "
            "too; try again later or lower the other integrations' use.")


# --- the check, step by step ------------------------------------------------------------------------

def run_check(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    """Probe the URL and the token's permissions, estimate what a run costs, and say whether the token is
    ready (0) or what it lacks (1)."""
    credentials, source = resolve_credentials(args, console, environ)
    console.out(f"{'API URL':<12}{credentials.endpoint.api_root} (form ok)")
    console.out(f"{'token':<12}from {source}")
    session = requests.Session()
    rate = RateHeaders(session)  # counts this check's requests and reads the hourly headroom from them
    client = KandjiClient(credentials, limiter=RateLimiter(args.max_requests_per_second), session=session,
                          retry=CHECK_RETRY, pool_size=1)
    probe = ApiProbe(client)
    refusals = Refusals(credentials.endpoint.host, source)
    try:
        results = probe_url_and_token(probe, refusals, console)
        posture = probe_posture(probe.get)
        tenant = probe_tenant_sources(probe.get, probe.host)
    except CheckStopped as stopped:
        console.err(f"error: {stopped}")
        console.out(f"{'this check':<12}{_requests(rate.responses)}")
        return 1
    print_permissions(console, results, args.apps_source)
    for line in posture_lines(posture, TOKEN_SETTINGS):
        console.out(line)
    count, count_note = estimate_run(console, results, posture, probe, refusals, rate, args.max_requests_per_second,
                                     tenant)
    console.out(f"{'this check':<12}{_requests(rate.responses)}")
    return print_verdict(console, results, count, count_note, args.apps_source)


def probe_url_and_token(probe: ApiProbe, refusals: Refusals, console: Console) -> dict[str, PermissionResult]:
    """The first request proves the URL leads to the API and the token is accepted (else CheckStopped); one
    request per permission the collector may need then says which the token has."""
    devices = probe.get("devices", {"limit": 1})
    refusals.raise_if_final(devices)
    if devices.status == 404:
        raise refusals.not_the_api(devices)
    if devices.status == 200 and not (devices.is_json and isinstance(devices.body, list)):
        raise CheckStopped(f"{devices.where} answered 200 but not a JSON device list: {refusals.host} is not the "
                           "Kandji API. Use the API URL shown in Kandji (Settings > Access > API URL).")
    results = {"devices": _permission("devices", devices)}
    console.out(f"{'token':<12}accepted")
    device_id = None
    if devices.status == 200 and devices.body and isinstance(devices.body[0], dict):
        device_id = str(devices.body[0].get("device_id") or "") or None
    for key in ("details", "apps"):
        answer = probe.get(f"devices/{path_segment(device_id or PLACEHOLDER_DEVICE_ID)}/{key}", endpoint=key)
        refusals.raise_if_final(answer)
        result = _permission(key, answer)
        if result.state == "present" and device_id is None:
            result.note = "checked with a placeholder device id: no device could be listed"
        results[key] = result
    prism = probe.get("prism/apps", {"limit": 1})
    refusals.raise_if_final(prism)
    results["prism"] = _permission("prism", prism)
    return results


def print_permissions(console: Console, results: dict[str, PermissionResult], apps_source: str) -> None:
    required, one_of = required_permissions(apps_source)
    console.out("permissions")
    for key in ("devices", "details", "apps", "prism"):
        result = results[key]
        needed = key in required or any(key in group for group in one_of)
        state = result.state.upper() if result.state != "present" and key in required else result.state
        role = "" if key in required else (" (one of Device apps / Prism: apps)" if needed else " (optional)")
        note = f": {result.note}" if result.note else ""
        console.out(f"  {state:<9} {result.label}{role}{note}")


def estimate_run(console: Console, results: dict[str, PermissionResult], posture: Mapping[str, CategoryProbe],
                 probe: ApiProbe, refusals: Refusals, rate: RateHeaders,
                 requests_per_second: float, tenant: Mapping[str, SourceProbe] | None = None) -> tuple[int | None, str]:
    """Count the devices (and Prism's app rows), then print what a full run costs against the rate limit;
    returns the count (None: unknown) and how it was taken."""
    count, count_note = _device_count(results, probe, refusals)
    app_rows = _prism_app_rows(results, probe)
    if count is not None:
        console.out(f"{'devices':<12}{count:,} ({count_note})")
    else:
        console.out(f"{'devices':<12}unknown ({count_note})")
    console.out(f"{'rate limit':<12}{rate.describe()}")
    if tenant is not None:
        for line in tenant_lines(dict(tenant), count, TOKEN_SETTINGS):
            console.out(line)
    for line in cost_lines(count, app_rows, rate.limit_hour, rate.remaining_hour, requests_per_second, posture,
                           tenant):
        console.out(line)
    return count, count_note


def print_verdict(console: Console, results: dict[str, PermissionResult], count: int | None, count_note: str,
                  apps_source: str) -> int:
    """The last line: ready (0) only when the token has every permission the apps source needs and the
    devices could be counted; else what is lacking (1)."""
    required, one_of = required_permissions(apps_source)
    lacking = [results[key] for key in sorted(required) if results[key].state != "present"]
    for group in one_of:
        if not any(results[key].state == "present" for key in group):
            lacking.extend(results[key] for key in sorted(group))
    missing = [item for item in lacking if item.state == "missing"]
    unknown = [item for item in lacking if item.state != "missing"]
    if missing:
        names = ", ".join(f"{item.short} ({item.label.split(' (')[0]})" for item in missing)
        console.out(f"{'result':<12}NOT ready: the token lacks {names}. Add {'it' if len(missing) == 1 else 'them'} "
                    f"in {TOKEN_SETTINGS}.")
        return 1
    if unknown:
        names = ", ".join(item.short for item in unknown)
        console.out(f"{'result':<12}NOT confirmed: {names} could not be checked (see above); run the check again.")
        return 1
    if count is None:
        console.out(f"{'result':<12}NOT ready: the device list could not be read ({count_note}).")
        return 1
    console.out(f"{'result':<12}ready: the token has every permission the collector needs "
                f"(apps source {apps_source})")
    return 0


def _requests(count: int) -> str:
    return f"{count:,} request{'' if count == 1 else 's'}"


def _permission(key: str, answer: Answer) -> PermissionResult:
    if answer.status == 200:
        return PermissionResult(key, "present")
    if answer.status == 403:
        return PermissionResult(key, "missing", f"{PERMISSION_MISSING.reason}: add it in {TOKEN_SETTINGS}")
    if answer.status == 404 and key in ("details", "apps"):
        return PermissionResult(key, "present", "the device was not found (404), but the token may ask")
    if answer.status == 404:
        return PermissionResult(key, "missing", "404: not available on this tenant")
    return PermissionResult(key, "unknown", f"answered {answer.status}; try again later")


def _device_count(results: dict[str, PermissionResult], probe: ApiProbe,
                  refusals: Refusals) -> tuple[int | None, str]:
    if results["prism"].state == "present":
        answer = probe.get("prism/count", {"category": "devices"})
        stop = refusals.stop_for(answer)
        count = answer.body.get("count") if answer.status == 200 and isinstance(answer.body, dict) else None
        if stop is None and isinstance(count, int):
            about = "about " if answer.body.get("approximate") else ""
            return count, f"{about}from /prism/count?category=devices, 1 request"
    if results["devices"].state == "missing":
        return None, "the token may not list devices"
    if results["devices"].state != "present":
        return None, f"the device list {results['devices'].note}"
    client = probe.client
    before = client.stats.requests
    try:
        count = len(client.list_devices())
    except KandjiSnapshotsError as error:
        return None, for_terminal(str(error))
    pages = client.stats.requests - before
    return count, (f"counted by paging /devices: {pages} request{'s' if pages != 1 else ''}, one per "
                   f"{PAGE_LIMIT} devices")


def _prism_app_rows(results: dict[str, PermissionResult], probe: ApiProbe) -> int | None:
    if results["prism"].state != "present":
        return None
    answer = probe.get("prism/count", {"category": "apps"})
    count = answer.body.get("count") if answer.status == 200 and isinstance(answer.body, dict) else None
    return count if isinstance(count, int) else None

