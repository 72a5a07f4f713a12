"""The operator's command line: check a token, collect once into a folder, diff two snapshots.

    python -m kandji_snapshots check   --url https://<tenant>.api.kandji.io [--token-file FILE | --secret-id ARN]
    python -m kandji_snapshots collect --url https://<tenant>.api.kandji.io --output DIR
    python -m kandji_snapshots diff    DIR-or-s3://BUCKET [--from SNAPSHOT_ID] [--to SNAPSHOT_ID] [--json]

The token is never a command-line argument (it would land in shell history): it comes from
--secret-id (the stack's Secrets Manager secret, read like the Lambda reads it), --token-file,
the environment variable KANDJI_API_TOKEN, or a hidden prompt, in that order. It is never
printed. Exit codes: 0 success, 1 failure (the message says what to fix), 2 usage error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import os
import re
import stat
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests

from .api_config import EXPECTED_FORM, LOCAL_HOSTS, KandjiCredentials, parse_secret, validate_api_url
from .catalog import Manifest, latest_snapshot_id, load_manifest, previous_snapshot_id
from .change_events import CHANGE_TYPES, EventTally, encode_event
from .change_rules import IGNORE_FIELDS_ENV, ChangeRules, parse_ignore_fields
from .collector import APPS_SOURCES, CollectorSettings, SnapshotCollector
from .differ import diff_snapshots
from .errors import ConfigurationError, KandjiSnapshotsError
from .kandji_client import PAGE_LIMIT, PERMISSIONS, KandjiClient, RequestStats, RetryPolicy
from .layout import MANIFEST_PREFIX, snapshot_id_from_manifest_key
from .progress import ProgressBar, format_duration
from .rate_limiter import RateLimiter
from .refresh import RequestBudget
from .settings import DEFAULT_HOURLY_RESERVE, DEFAULT_MAX_WORKERS, DEFAULT_REQUEST_BUDGET, DEFAULT_REQUESTS_PER_SECOND
from .storage import LocalObjectStore, ObjectNotFound, ObjectStore, S3ObjectStore

PROG = "python -m kandji_snapshots"
TOKEN_ENV = "KANDJI_API_TOKEN"
URL_ENV = "KANDJI_API_URL"
INSECURE_ENV = "KANDJI_ALLOW_INSECURE_LOCALHOST"
DOCUMENTED_HOURLY_LIMIT = 10_000  # Kandji's published limit per tenant, when the API does not say
PLACEHOLDER_DEVICE_ID = "00000000-0000-0000-0000-000000000000"
TOKEN_SETTINGS = "Kandji > Settings > Access > API Token > Manage API Permissions"
_SNAPSHOT_ID = re.compile(r"^\d{8}T\d{6}Z$")


class UsageError(Exception):
    """The command line itself is wrong: exit code 2."""


# --- output --------------------------------------------------------------------------------------

class Console:
    """stdout and stderr, looked up at each write (so capsys and redirections work), token redacted."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def hide(self, secret: str) -> None:
        # A real token is long; replacing a few characters everywhere would only garble the output.
        if len(secret) >= 6 and secret not in self._secrets:
            self._secrets.append(secret)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def out(self, text: str = "") -> None:
        sys.stdout.write(self.redact(text) + "\n")

    def err(self, text: str) -> None:
        sys.stderr.write(self.redact(text) + "\n")
        sys.stderr.flush()


# --- credentials -----------------------------------------------------------------------------------

def _flag(environ: Mapping[str, str], name: str) -> bool:
    return (environ.get(name) or "").strip().lower() in ("1", "true", "yes")


def read_secret(secret_id: str) -> str:
    """The secret's value, read with boto3 (AWS_PROFILE / AWS_REGION / AWS_ENDPOINT_URL apply)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as error:
        raise ConfigurationError(
            f"Could not read the Kandji secret {secret_id}: {error}. Check that it exists, has a value "
            "(aws secretsmanager put-secret-value) and that your AWS credentials (AWS_PROFILE, AWS_REGION) "
            "may read it.") from None
    value = response.get("SecretString")
    if value is None:
        value = (response.get("SecretBinary") or b"").decode("utf-8", errors="replace")
    return value


def _read_token_file(path: str, console: Console) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = os.stat(path).st_mode
    except OSError as error:
        raise ConfigurationError(f"Cannot read the token file {path}: {error.strerror or error}.") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        console.err(f"warning: the token file {path} is readable by other users; chmod 600 {path}")
    return text


def resolve_credentials(args: argparse.Namespace, console: Console,
                        environ: Mapping[str, str]) -> tuple[KandjiCredentials, str]:
    """(credentials, where the token came from). The URL is validated before any request."""
    allow_insecure = args.allow_insecure_localhost or _flag(environ, INSECURE_ENV)
    url = (args.url or environ.get(URL_ENV) or "").strip() or None
    if args.secret_id and args.token_file:
        raise UsageError("Give either --secret-id or --token-file, not both.")
    if args.secret_id:
        secret = read_secret(args.secret_id)
        _hide_secret_value(secret, console)
        try:
            credentials = parse_secret(secret, fallback_url=url, allow_insecure_localhost=allow_insecure)
        except ConfigurationError as error:
            if url is None and str(error).startswith("No Kandji API URL"):
                raise ConfigurationError(f"{error} Or give --url.") from None
            raise
        console.hide(credentials.token)
        if args.url and _endpoint_or_none(args.url, allow_insecure) not in (None, credentials.endpoint):
            console.err(f"note: the secret names the API URL {credentials.endpoint.api_root}, which the "
                        "collector uses; --url only applies when the secret holds a bare token.")
        return credentials, f"secret {args.secret_id}"

    if args.token_file:
        text, source = _read_token_file(args.token_file, console), f"file {args.token_file}"
    elif (environ.get(TOKEN_ENV) or "").strip():
        text, source = environ[TOKEN_ENV], TOKEN_ENV
    elif sys.stdin is not None and sys.stdin.isatty():
        if not url:
            raise UsageError(_no_url_message())
        try:  # before asking for a token
            validate_api_url(url, allow_insecure_localhost=allow_insecure)
        except ConfigurationError as error:
            raise ConfigurationError(_with_url_hint(str(error), url)) from None
        text, source = getpass.getpass("Kandji API token (input hidden): "), "prompt"
    else:
        raise UsageError(f"No API token: use --token-file FILE, --secret-id ARN, the environment variable "
                         f"{TOKEN_ENV}, or run in a terminal to be prompted. The token is never taken on the "
                         "command line.")
    text = text.strip()
    console.hide(text)
    if not text:
        raise ConfigurationError(f"The API token from {source} is empty.")
    if not url and not text.startswith("{"):
        raise UsageError(_no_url_message())
    try:
        credentials = parse_secret(text, fallback_url=url, allow_insecure_localhost=allow_insecure)
    except ConfigurationError as error:
        raise ConfigurationError(_with_url_hint(str(error), url)) from None
    console.hide(credentials.token)
    return credentials, source


def _hide_secret_value(secret: str, console: Console) -> None:
    text = (secret or "").strip()
    if text.startswith("{"):
        try:
            token = json.loads(text).get("api_token")
        except (ValueError, AttributeError):
            token = None
        if isinstance(token, str):
            console.hide(token.strip())
    else:
        console.hide(text)


def _endpoint_or_none(url: str, allow_insecure: bool):
    try:
        return validate_api_url(url, allow_insecure_localhost=allow_insecure)
    except ConfigurationError:
        return None


def _no_url_message() -> str:
    return f"No API URL: give --url or set {URL_ENV}. Expected {EXPECTED_FORM}."


_CONSOLE_HOST = re.compile(r"^(?P<tenant>[a-z0-9][a-z0-9-]*)\.(?P<region>eu\.)?(?P<domain>kandji\.io|iru\.com)$")
_REGION_SWAP = ((".api.eu.kandji.io", ".api.kandji.io"), (".api.eu.iru.com", ".api.iru.com"))


def _with_url_hint(message: str, url: str | None) -> str:
    """Adds "did you mean" for the web console's URL (https://acme.kandji.io) and http://."""
    if not url:
        return message
    parts = urlsplit(url.strip())
    try:
        host = (parts.hostname or "").lower()
    except ValueError:
        return message
    match = _CONSOLE_HOST.match(host)
    if "not a Kandji tenant API host" in message and match and match.group("tenant") not in ("api", "www", "app"):
        api_host = f"{match.group('tenant')}.api.{match.group('region') or ''}{match.group('domain')}"
        return (f"{message} {parts.scheme}://{host} looks like the web console's address; the API URL is "
                f"probably https://{api_host}")
    if "must use https://" in message:
        if host in LOCAL_HOSTS:
            return f"{message} For a local simulator, add --allow-insecure-localhost."
        return f"{message} Try https://{host}"
    return message


def _other_region(host: str) -> str | None:
    for eu, us in _REGION_SWAP:
        if host.endswith(eu):
            return host[: -len(eu)] + us
        if host.endswith(us):
            return host[: -len(us)] + eu
    return None


# --- talking to the API, one request at a time (check) -----------------------------------------------

class RateHeaders:
    """The hourly rate-limit headers of every response on a session, and how many responses came back."""

    def __init__(self, session: requests.Session):
        self.remaining_hour: int | None = None
        self.limit_hour: int | None = None
        self.responses = 0
        session.hooks["response"].append(self._observe)

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.responses += 1
        remaining = _int_header(response.headers, "x-ratelimit-remaining-hour")
        limit = _int_header(response.headers, "x-ratelimit-limit-hour")
        if remaining is not None:
            self.remaining_hour = remaining
        if limit is not None:
            self.limit_hour = limit

    def describe(self) -> str:
        if self.remaining_hour is None:
            return (f"not reported by the API (Kandji allows {DOCUMENTED_HOURLY_LIMIT:,} requests an hour per "
                    "tenant, shared with every integration)")
        if self.limit_hour is None:
            return f"{self.remaining_hour:,} requests left this hour"
        return f"{self.remaining_hour:,} of {self.limit_hour:,} requests left this hour"


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        value = headers.get(name)
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class Answer:
    path: str
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
    """Single GETs: no retries (one short wait for a per-second 429), no redirects followed."""

    def __init__(self, credentials: KandjiCredentials, session: requests.Session, *, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.root = credentials.endpoint.api_root
        self.host = credentials.endpoint.host
        self._headers = {"Authorization": f"Bearer {credentials.token}", "Accept": "application/json"}
        self._session = session
        self._timeout = timeout
        self._sleep = sleep

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Answer:
        for attempt in (1, 2):
            try:
                response = self._session.get(self.root + path, params=params, headers=self._headers,
                                             timeout=(10.0, self._timeout), allow_redirects=False)
            except requests.exceptions.SSLError:
                return Answer(path, None, problem=f"the TLS handshake with {self.host} failed: it is not the "
                                                  "Kandji API, or something intercepts HTTPS on this network")
            except requests.exceptions.Timeout:
                return Answer(path, None, problem=f"{self.host} did not answer within {self._timeout:g} s")
            except requests.exceptions.ConnectionError as error:
                text = str(error)
                if any(sign in text for sign in ("NameResolution", "Name or service not known", "getaddrinfo",
                                                 "nodename nor servname", "No address associated")):
                    why = f"the host name {self.host} does not resolve"
                else:
                    why = f"could not connect to {self.host} (refused or reset)"
                return Answer(path, None, problem=why)
            except requests.exceptions.RequestException as error:
                return Answer(path, None, problem=f"{type(error).__name__} talking to {self.host}")
            if response.status_code == 429 and attempt == 1:
                wait = _retry_after(response.headers)
                hour_left = _int_header(response.headers, "x-ratelimit-remaining-hour")
                if wait is not None and wait <= 5 and hour_left != 0:
                    self._sleep(wait)  # the per-second window: worth one wait
                    continue
            try:
                body, is_json = response.json(), True
            except ValueError:
                body, is_json = None, False
            return Answer(path, response.status_code, body, is_json, response.headers)
        raise AssertionError("unreachable")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name in ("Retry-After", "ratelimit-reset"):
        try:
            value = headers.get(name)
            if value is not None:
                return max(0.0, float(value))
        except ValueError:
            continue
    return None


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


def _stop_for(answer: Answer, host: str, token_source: str) -> CheckStopped | None:
    """The answers after which nothing else can be learned."""
    where = answer.where
    if answer.status is None:
        return CheckStopped(f"{where}: {answer.problem}. Check the tenant name and region in the API URL "
                            "(Kandji > Settings > Access > API URL) and this machine's network.")
    if answer.status == 401:
        fix = "and store it in the secret" if token_source.startswith("secret") else "and use it here"
        other = _other_region(host)
        region = f" If the tenant is in the other region, the API host is {other}." if other else ""
        return CheckStopped(
            f"{where} answered 401 Unauthorized: the API token is wrong, revoked or expired, or belongs to "
            f"another tenant. Create a new token in Kandji (Settings > Access > API Token) {fix}.{region}")
    if answer.status == 429:
        headers = answer.headers or {}
        left = _int_header(headers, "x-ratelimit-remaining-hour")
        wait = _retry_after(headers)
        detail = []
        if left is not None:
            detail.append(f"{left:,} requests left this hour")
        if wait is not None:
            detail.append(f"retry after {format_duration(wait)}")
        extra = f" ({', '.join(detail)})" if detail else ""
        return CheckStopped(
            f"{where} answered 429 Too Many Requests{extra}: the tenant's rate limit is spent, by this or "
            "other integrations (10,000 requests an hour per tenant, shared). A collector run now would fail "
            "too; try again later or lower the other integrations' use.")
    if 300 <= answer.status < 400:
        location = (answer.headers or {}).get("Location", "")
        to = f" to {location}" if location else ""
        return CheckStopped(
            f"{where} answered a {answer.status} redirect{to}: {host} is not the API host (the collector never "
            "follows redirects, so the token never leaves the tenant's host). Use the API URL shown in Kandji "
            "(Settings > Access > API URL).")
    return None


def _not_found_message(where: str, host: str) -> str:
    other = _other_region(host)
    region = (f" If the tenant is in the other region, the host is {other}." if other else "")
    return (f"{where} answered 404 Not Found on {host}: the URL does not lead to a Kandji tenant's API. Check "
            f"the tenant name and the region (US: <tenant>.api.kandji.io, EU: <tenant>.api.eu.kandji.io) in "
            f"the API URL (Kandji > Settings > Access > API URL).{region}")


def run_check(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    credentials, source = resolve_credentials(args, console, environ)
    host = credentials.endpoint.host
    console.out(f"{'API URL':<12}{credentials.endpoint.api_root} (form ok)")
    console.out(f"{'token':<12}from {source}")
    session = requests.Session()
    rate = RateHeaders(session)
    probe = ApiProbe(credentials, session)
    results: dict[str, PermissionResult] = {}
    try:
        devices = probe.get("devices", {"limit": 1})
        stop = _stop_for(devices, host, source)
        if stop:
            raise stop
        if devices.status == 404:
            raise CheckStopped(_not_found_message(devices.where, host))
        if devices.status == 200 and not (devices.is_json and isinstance(devices.body, list)):
            raise CheckStopped(f"{devices.where} answered 200 but not a JSON device list: {host} is not the "
                               "Kandji API. Use the API URL shown in Kandji (Settings > Access > API URL).")
        results["devices"] = _permission("devices", devices)
        device_id = None
        if devices.status == 200 and devices.body and isinstance(devices.body[0], dict):
            device_id = str(devices.body[0].get("device_id") or "") or None
        console.out(f"{'token':<12}accepted")
        for key, path in (("details", "details"), ("apps", "apps")):
            answer = probe.get(f"devices/{device_id or PLACEHOLDER_DEVICE_ID}/{path}")
            stop = _stop_for(answer, host, source)
            if stop:
                raise stop
            result = _permission(key, answer)
            if result.state == "present" and device_id is None:
                result.note = "checked with a placeholder device id: no device could be listed"
            results[key] = result
        prism = probe.get("prism/apps", {"limit": 1})
        stop = _stop_for(prism, host, source)
        if stop:
            raise stop
        results["prism"] = _permission("prism", prism)
    except CheckStopped as stopped:
        console.err(f"error: {stopped}")
        console.out(f"{'this check':<12}{_requests(rate.responses)}")
        return 1

    required, one_of = required_permissions(args.apps_source)
    console.out("permissions")
    for key in ("devices", "details", "apps", "prism"):
        result = results[key]
        needed = key in required or any(key in group for group in one_of)
        state = result.state.upper() if result.state != "present" and key in required else result.state
        role = "" if key in required else (" (one of Device apps / Prism: apps)" if needed else " (optional)")
        note = f": {result.note}" if result.note else ""
        console.out(f"  {state:<9} {result.label}{role}{note}")

    count, count_note = _device_count(results, probe, credentials, session, args, host, source)
    app_rows = _prism_app_rows(results, probe)
    if count is not None:
        console.out(f"{'devices':<12}{count:,} ({count_note})")
    else:
        console.out(f"{'devices':<12}unknown ({count_note})")
    console.out(f"{'rate limit':<12}{rate.describe()}")
    for line in cost_lines(count, app_rows, rate.limit_hour, rate.remaining_hour, args.max_requests_per_second):
        console.out(line)
    console.out(f"{'this check':<12}{_requests(rate.responses)}")

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
                f"(apps source {args.apps_source})")
    return 0


def _requests(count: int) -> str:
    return f"{count:,} request{'' if count == 1 else 's'}"


def _permission(key: str, answer: Answer) -> PermissionResult:
    if answer.status == 200:
        return PermissionResult(key, "present")
    if answer.status == 403:
        return PermissionResult(key, "missing", f"403 Forbidden: add it in {TOKEN_SETTINGS}")
    if answer.status == 404 and key in ("details", "apps"):
        return PermissionResult(key, "present", "the device was not found (404), but the token may ask")
    if answer.status == 404:
        return PermissionResult(key, "missing", "404: not available on this tenant")
    return PermissionResult(key, "unknown", f"answered {answer.status}; try again later")


def _device_count(results: dict[str, PermissionResult], probe: ApiProbe, credentials: KandjiCredentials,
                  session: requests.Session, args: argparse.Namespace, host: str,
                  source: str) -> tuple[int | None, str]:
    if results["prism"].state == "present":
        answer = probe.get("prism/count", {"category": "devices"})
        stop = _stop_for(answer, host, source)
        count = answer.body.get("count") if answer.status == 200 and isinstance(answer.body, dict) else None
        if stop is None and isinstance(count, int):
            about = "about " if answer.body.get("approximate") else ""
            return count, f"{about}from /prism/count?category=devices, 1 request"
    if results["devices"].state == "missing":
        return None, "the token may not list devices"
    if results["devices"].state != "present":
        return None, f"the device list {results['devices'].note}"
    client = KandjiClient(credentials, limiter=RateLimiter(args.max_requests_per_second), session=session,
                          retry=RetryPolicy(max_attempts=3, max_rate_limited_attempts=3, max_backoff=5.0),
                          pool_size=1)
    before = client.stats.requests
    try:
        count = len(client.list_devices())
    except KandjiSnapshotsError as error:
        return None, str(error)
    pages = client.stats.requests - before
    return count, (f"counted by paging /devices: {pages} request{'s' if pages != 1 else ''}, one per "
                   f"{PAGE_LIMIT} devices")


def _prism_app_rows(results: dict[str, PermissionResult], probe: ApiProbe) -> int | None:
    if results["prism"].state != "present":
        return None
    answer = probe.get("prism/count", {"category": "apps"})
    count = answer.body.get("count") if answer.status == 200 and isinstance(answer.body, dict) else None
    return count if isinstance(count, int) else None


def list_pages(devices: int) -> int:
    """Requests to list `devices` the way KandjiClient.list_devices pages: until a page shorter than the
    largest one so far, or an empty one (so 40 devices take 2 requests, 1,100 take 4, 600 take 3)."""
    if devices <= 0:
        return 1
    full = devices // PAGE_LIMIT
    if full == 0:
        return 2
    return full + 1


def cost_lines(devices: int | None, app_rows: int | None, limit_hour: int | None, remaining_hour: int | None,
               requests_per_second: float) -> list[str]:
    """What a full run would cost in requests, against the hourly limit and the collector's default budget."""
    if devices is None:
        return [f"{'full run':<12}unknown until the devices can be counted"]
    pages = list_pages(devices)
    per_device = 2 * devices + pages
    limit = limit_hour or DOCUMENTED_HOURLY_LIMIT
    usable = max(0, min(DEFAULT_REQUEST_BUDGET, limit - DEFAULT_HOURLY_RESERVE))
    lines = [f"{'full run':<12}{per_device:,} requests per-device (2 x {devices:,} devices for details and apps "
             f"+ {pages:,} list page{'s' if pages != 1 else ''}), about "
             f"{format_duration(per_device / requests_per_second)} at {requests_per_second:g} requests/s"]
    limit_text = f"{limit:,}/hour" + ("" if limit_hour else " (documented)")
    if per_device <= usable:
        lines.append(f"{'':<12}fits in one run: the collector may spend {usable:,} per run (budget "
                     f"{DEFAULT_REQUEST_BUDGET:,}, leaving {DEFAULT_HOURLY_RESERVE:,} of the tenant's {limit_text} "
                     "for other integrations)")
    else:
        runs = math.ceil(per_device / usable) if usable else None
        every = f"every device is refreshed about every {runs} runs" if runs else "no device can be refreshed"
        lines.append(f"{'':<12}more than one run may spend ({usable:,}: budget {DEFAULT_REQUEST_BUDGET:,}, leaving "
                     f"{DEFAULT_HOURLY_RESERVE:,} of the tenant's {limit_text}): each run refreshes the devices "
                     f"that most need it (rolling refresh) and {every}")
    if remaining_hour is not None and remaining_hour - DEFAULT_HOURLY_RESERVE < min(per_device, usable):
        affordable = max(0, remaining_hour - DEFAULT_HOURLY_RESERVE - pages) // 2
        lines.append(f"{'':<12}right now only {remaining_hour:,} are left this hour: a run now would refresh "
                     f"about {affordable:,} devices and carry the others forward")
    if app_rows is not None:
        prism = devices + pages + max(1, math.ceil(app_rows / PAGE_LIMIT))
        lines.append(f"{'':<12}{prism:,} requests with --apps-source prism (KANDJI_APPS_SOURCE=prism): details "
                     f"per device, {app_rows:,} app rows fleet-wide in pages of {PAGE_LIMIT}")
    return lines


# --- collect -----------------------------------------------------------------------------------------

def run_collect(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    credentials, source = resolve_credentials(args, console, environ)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file, not a folder.")
    store = LocalObjectStore(output)
    _refuse_other_tenant(store, credentials.endpoint.host)

    session = requests.Session()
    rate = RateHeaders(session)
    stats = RequestStats()
    budget = RequestBudget(per_run=args.budget, hourly_reserve=args.hourly_reserve,
                           requests_per_second=args.max_requests_per_second)
    client = KandjiClient(credentials, limiter=RateLimiter(args.max_requests_per_second), session=session,
                          stats=stats, pool_size=args.max_workers, budget=budget)
    settings = CollectorSettings(max_workers=args.max_workers, apps_source=args.apps_source)
    bar = None
    if args.progress or _isatty(sys.stderr):
        bar = ProgressBar(lambda: sys.stderr, interactive=_isatty(sys.stderr))
        _LOG_HANDLER.bar = bar
    collector = SnapshotCollector(client, store, settings=settings, request_stats=stats.as_dict, budget=budget,
                                  progress=bar)
    console.err(f"collecting from {credentials.endpoint.host} (token from {source}) into {output}")
    if bar:
        bar.status("reading the device list" + (" and Prism apps" if args.apps_source != "per-device" else ""))
    started = time.monotonic()
    try:
        manifest = collector.collect(correlation_id="cli")
    except KeyboardInterrupt:
        if bar:
            bar.finish()
        console.err("interrupted: nothing was committed (the parts written so far were deleted)")
        return 130
    finally:
        _LOG_HANDLER.bar = None
        if bar:
            bar.finish()  # ends the bar's line, so an error message starts on its own
    _print_collected(console, manifest, output, rate, time.monotonic() - started)
    return 0


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _comparable_host(host: str) -> str:
    name = host.split(":")[0]
    return name if name in LOCAL_HOSTS else host  # a simulator's port changes per run


def _refuse_other_tenant(store: ObjectStore, host: str) -> None:
    """A folder holds one tenant: carrying rows forward or diffing across tenants would be nonsense."""
    latest = latest_snapshot_id(store)
    if latest is None:
        return
    try:
        previous_host = load_manifest(store, latest).document.get("api_host")
    except (ObjectNotFound, ValueError):
        return
    if previous_host and _comparable_host(previous_host) != _comparable_host(host):
        raise ConfigurationError(
            f"{store.location} holds snapshots of {previous_host}, not {host}: one folder holds one tenant. "
            "Use another --output folder.")


def _print_collected(console: Console, manifest: Manifest, output: Path, rate: RateHeaders, seconds: float) -> None:
    document = manifest.document
    requests_made = document.get("requests") or {}
    console.out(f"snapshot    {manifest.snapshot_id}")
    console.out(f"folder      {output.resolve()}")
    console.out(f"devices     {document['device_count']:,} written of {document['listed_devices']:,} listed: "
                f"{document['refreshed_devices']:,} refreshed, {document['carried_devices']:,} carried forward, "
                f"{document['pending_devices']:,} pending, {len(document['skipped_devices']):,} skipped")
    console.out(f"apps        {manifest.table_rows('device_apps'):,} rows ({document['apps_source']})")
    console.out(f"requests    {requests_made.get('total', 0):,} ({requests_made.get('retries', 0):,} retries, "
                f"{requests_made.get('rate_limited', 0):,} rate limited); rate limit: {rate.describe()}")
    console.out(f"took        {format_duration(seconds)}")
    if document["pending_devices"] or document["carried_devices"]:
        console.out("note        the request budget did not cover every device: the rest were carried forward "
                    "or are pending (details unknown). Run again later to refresh them, or raise --budget.")
    for item in document["skipped_devices"]:
        console.out(f"skipped     {item.get('serial_number') or item['device_id']}: {item['reason']}")
    console.out(f"next        {PROG} diff {output}")


# --- diff ---------------------------------------------------------------------------------------------

def open_source(source: str) -> ObjectStore:
    if source.startswith("s3://"):
        bucket, _, rest = source[len("s3://"):].partition("/")
        if not bucket or rest.strip("/"):
            raise UsageError(f"{source!r}: an S3 source is s3://BUCKET, the stack's snapshot bucket, without a "
                             "prefix.")
        import boto3

        return S3ObjectStore(boto3.client("s3"), bucket)
    path = Path(source)
    if not path.is_dir():
        raise ConfigurationError(f"{source} is not a folder. Give a folder written by `collect` (or the local run) "
                                 "or s3://BUCKET.")
    return LocalObjectStore(path)


def _snapshot_ids(store: ObjectStore) -> list[str]:
    ids = (snapshot_id_from_manifest_key(key) for key in store.list_keys(MANIFEST_PREFIX))
    return sorted(snapshot_id for snapshot_id in ids if snapshot_id)


def _load(store: ObjectStore, snapshot_id: str, option: str) -> Manifest:
    try:
        return load_manifest(store, snapshot_id)
    except ObjectNotFound:
        known = _snapshot_ids(store)
        latest = f" The latest there: {', '.join(known[-5:])}." if known else ""
        raise ConfigurationError(f"{option} {snapshot_id}: no committed snapshot with that id in "
                                 f"{store.location} (no manifest).{latest}") from None
    except ValueError as error:
        raise ConfigurationError(f"{option} {snapshot_id}: {error}") from None


def run_diff(args: argparse.Namespace, console: Console, environ: Mapping[str, str]) -> int:
    for option, value in (("--from", args.from_id), ("--to", args.to_id)):
        if value is not None and not _SNAPSHOT_ID.match(value):
            raise UsageError(f"{option} {value!r} is not a snapshot id (YYYYMMDDTHHMMSSZ, as `collect` prints).")
    store = open_source(args.source)
    to_id = args.to_id or latest_snapshot_id(store)
    if to_id is None:
        raise ConfigurationError(f"{store.location} holds no snapshot (no manifest under {MANIFEST_PREFIX}).")
    current = _load(store, to_id, "--to")
    from_id = args.from_id or previous_snapshot_id(store, to_id)
    if from_id is None:
        raise ConfigurationError(f"{to_id} is the first snapshot in {store.location}: there is nothing before it "
                                 "to compare it with. Collect again later, or give --from.")
    if from_id == to_id:
        raise UsageError(f"--from and --to are the same snapshot ({to_id}): nothing to compare.")
    previous = _load(store, from_id, "--from")
    if from_id > to_id:
        console.err(f"note: --from {from_id} is newer than --to {to_id}: the changes go backwards in time.")

    ignore = args.ignore_fields if args.ignore_fields is not None else environ.get(IGNORE_FIELDS_ENV)
    rules = ChangeRules(parse_ignore_fields(ignore))
    events = diff_snapshots(store, previous, current, rules)
    if args.json:
        for event in events:
            sys.stdout.write(encode_event(event) + "\n")
        return 0
    console.out(f"changes from {from_id} to {to_id} in {store.location}")
    tally = EventTally()
    header_printed = False
    for event in events:
        if not header_printed:
            console.out(table_line(TABLE_HEADER))
            console.out(table_line({name: "-" * width for name, width in TABLE_WIDTHS.items()} | {"what": "-" * 40}))
            header_printed = True
        tally.add(event)
        console.out(table_line(table_row(event)))
    if not tally.total:
        console.out("no changes")
        return 0
    counts = ", ".join(f"{change_type} {tally.by_change_type[change_type]:,}" for change_type in CHANGE_TYPES
                       if tally.by_change_type.get(change_type))
    high = tally.by_severity.get("high", 0)
    console.out(f"{tally.total:,} change{'s' if tally.total != 1 else ''} ({high:,} high): {counts}")
    return 0


TABLE_WIDTHS = {"change": 14, "severity": 8, "platform": 8, "serial": 12, "device": 24}
TABLE_HEADER = {"change": "change", "severity": "severity", "platform": "platform", "serial": "serial",
                "device": "device", "what": "what"}


def table_line(cells: Mapping[str, str]) -> str:
    parts = [(_cut(cells.get(name) or "", width) if name == "device" else cells.get(name) or "").ljust(width)
             for name, width in TABLE_WIDTHS.items()]
    return ("  ".join(parts) + "  " + (cells.get("what") or "")).rstrip()


def table_row(event: Mapping[str, Any]) -> dict[str, str]:
    return {"change": event["change_type"], "severity": event["severity"], "platform": event.get("platform") or "",
            "serial": event.get("serial_number") or event["device_id"], "device": event.get("device_name") or "",
            "what": describe_event(event)}


def describe_event(event: Mapping[str, Any], max_changes: int = 4) -> str:
    """One line saying what changed: the fields with before -> after, the app and its versions, or the app count."""
    changes = event.get("changes")
    if changes:
        parts = []
        for change in changes[:max_changes]:
            text = f"{change['field']}: {_value(change.get('before'))} -> {_value(change.get('after'))}"
            if change.get("reason"):
                text += f" ({change['reason']})"
            parts.append(text)
        if len(changes) > max_changes:
            parts.append(f"+{len(changes) - max_changes} more")
        return "; ".join(parts)
    app = event.get("app")
    if app:
        name = app.get("app_name") or app.get("bundle_id") or app.get("path") or "?"
        bundle = f" ({app['bundle_id']})" if app.get("bundle_id") and app.get("bundle_id") != name else ""
        if event["change_type"] == "app_updated":
            versions = f"{app.get('previous_version')} -> {app.get('version')}"
        elif event["change_type"] == "app_removed":
            versions = str(app.get("previous_version") or "")
        else:
            versions = str(app.get("version") or "")
        return f"{name}{bundle} {versions}".rstrip()
    if event.get("apps") is not None:
        count = len(event["apps"])
        return f"{count} app{'s' if count != 1 else ''}"
    return ""


def _value(value: Any, width: int = 40) -> str:
    return _cut(json.dumps(value, ensure_ascii=False, default=str), width)


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- command line -------------------------------------------------------------------------------------

def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 0.1 and 1000 (Kandji enforces 50/s)")
    return value


def _budget(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of requests (1 or more), or 'none' for no cap")
    return int(text)


def _count(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: a whole number from {minimum} to {maximum}")
        return int(text)
    return parse


class _RefuseToken(argparse.Action):
    """`--token VALUE` would put the token in shell history: refuse it without echoing it."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise UsageError("The token is never taken on the command line (it would land in shell history): use "
                         f"--token-file FILE, --secret-id ARN, the environment variable {TOKEN_ENV}, or the prompt.")


def _kandji_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("Kandji API and token")
    group.add_argument("--url", metavar="API_URL",
                       help=f"the tenant's API URL, {EXPECTED_FORM} (default: ${URL_ENV}; with --secret-id, the "
                            "secret's api_url wins, as in the Lambda)")
    group.add_argument("--token-file", metavar="FILE", help="read the token from FILE ('-': standard input)")
    group.add_argument("--secret-id", metavar="ARN_OR_NAME",
                        help="read the token (and API URL) from this Secrets Manager secret, like the collector "
                             "Lambda: JSON {\"api_url\", \"api_token\"} or the bare token (AWS credentials from "
                             "the usual AWS_PROFILE / AWS_REGION)")
    group.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    group.add_argument("--allow-insecure-localhost", action="store_true",
                       help=f"accept http://127.0.0.1:PORT (the simulator), like {INSECURE_ENV}=true")
    group.add_argument("--max-requests-per-second", type=_positive_rate, default=DEFAULT_REQUESTS_PER_SECOND,
                       metavar="N", help=f"request rate ceiling (default {DEFAULT_REQUESTS_PER_SECOND:g}; Kandji "
                                         "enforces 50)")
    return parent


def _common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="log the package's debug messages and show tracebacks")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Operator commands of kandji-snapshots: check a token, collect once into a folder, diff "
                    "two snapshots.",
        epilog=f"The token comes from --secret-id, --token-file, ${TOKEN_ENV} or a hidden prompt, never from "
               "the command line.\nExit codes: 0 success, 1 failure (the message says what to fix), 2 usage "
               "error.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="log the package's debug messages and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    kandji, common = _kandji_options(), _common_options()

    check = commands.add_parser(
        "check", parents=[kandji, common], allow_abbrev=False,
        help="check the API URL and token: permissions, device count, rate-limit headroom, cost of a run",
        description="Validate the API URL, call each endpoint the collector needs once, and report which "
                    "permissions the token has, the device count, the rate-limit headroom and what a full run "
                    "costs. Exit code 0 when the collector has everything it needs, 1 otherwise.")
    check.add_argument("--apps-source", choices=APPS_SOURCES, default="per-device",
                       help="the KANDJI_APPS_SOURCE the collector will use, which decides whether Device apps "
                            "or Prism: apps is required (default per-device)")
    check.set_defaults(handler=run_check)

    collect = commands.add_parser(
        "collect", parents=[kandji, common], allow_abbrev=False,
        help="take one snapshot into a local folder (no AWS account needed)",
        description="Take one snapshot of the tenant with the collector the Lambda uses, into a local folder "
                    "laid out like the bucket (snapshots/<table>/dt=.../). Run again later and `diff` the folder.")
    collect.add_argument("--output", "-o", required=True, metavar="DIR", help="the folder to write to")
    collect.add_argument("--apps-source", choices=APPS_SOURCES, default="per-device",
                         help="per-device (default), prism (fleet-wide, one request per 300 apps) or auto")
    collect.add_argument("--budget", type=_budget, default=DEFAULT_REQUEST_BUDGET, metavar="N",
                         help=f"most requests this run may send (default {DEFAULT_REQUEST_BUDGET:,}, as the Lambda; "
                              "'none' for no cap); devices past it are carried forward or left pending")
    collect.add_argument("--hourly-reserve", type=_count(0, 1_000_000), default=DEFAULT_HOURLY_RESERVE, metavar="N",
                         help=f"of the tenant's hourly limit, leave this many for other integrations "
                              f"(default {DEFAULT_HOURLY_RESERVE:,})")
    collect.add_argument("--max-workers", type=_count(1, 64), default=DEFAULT_MAX_WORKERS, metavar="N",
                         help=f"requests in flight (default {DEFAULT_MAX_WORKERS})")
    collect.add_argument("--progress", action="store_true",
                         help="show the progress bar on stderr even when it is not a terminal")
    collect.set_defaults(handler=run_collect)

    diff = commands.add_parser(
        "diff", parents=[common], allow_abbrev=False,
        help="the changes between two snapshots, in a folder or in S3 (publishes nothing)",
        description="Print the change events between two committed snapshots, as the differ computes them "
                    "(nothing is published). Default: the latest snapshot against the one before it.")
    diff.add_argument("source", metavar="SOURCE", help="a folder written by `collect`, or s3://BUCKET")
    diff.add_argument("--from", dest="from_id", metavar="SNAPSHOT_ID",
                      help="the older snapshot (default: the one before --to)")
    diff.add_argument("--to", dest="to_id", metavar="SNAPSHOT_ID", help="the newer snapshot (default: the latest)")
    diff.add_argument("--json", action="store_true", help="one change event per line (JSON Lines), as published")
    diff.add_argument("--ignore-fields", metavar="PATTERNS",
                      help=f"more fields to ignore, comma-separated fnmatch patterns (default: ${IGNORE_FIELDS_ENV})")
    diff.set_defaults(handler=run_diff)
    return parser


# --- logging -------------------------------------------------------------------------------------------

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class _CliLogHandler(logging.Handler):
    """The package's log records on the current stderr, one line each, with their `extra` fields."""

    def __init__(self) -> None:
        super().__init__()
        self.console: Console | None = None
        self.bar: ProgressBar | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extras = {key: value for key, value in vars(record).items() if key not in _RECORD_FIELDS}
            text = f"{record.levelname.lower()}: {record.getMessage()}"
            if extras:
                text += " (" + ", ".join(f"{key}={value}" for key, value in extras.items()) + ")"
            if self.bar is not None:
                self.bar.clear()
            if self.console is not None:
                text = self.console.redact(text)
            sys.stderr.write(text + "\n")
        except Exception:  # logging must never break a run
            self.handleError(record)


_LOG_HANDLER = _CliLogHandler()


def _configure_logging(debug: bool, console: Console) -> Callable[[], None]:
    """Warnings of the package on stderr (debug: everything); returns what undoes it."""
    package = logging.getLogger("kandji_snapshots")
    client = logging.getLogger("kandji_snapshots.kandji_client")
    saved = (package.level, package.propagate, client.level)
    _LOG_HANDLER.console = console
    package.addHandler(_LOG_HANDLER)
    package.setLevel(logging.DEBUG if debug else logging.WARNING)
    package.propagate = False
    # Retries are expected under rate limiting; they are summed up at the end instead of one line each.
    client.setLevel(logging.NOTSET if debug else logging.ERROR)

    def restore() -> None:
        package.removeHandler(_LOG_HANDLER)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        client.setLevel(saved[2])
        _LOG_HANDLER.bar = None

    return restore


# --- entry point ---------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    console = Console()
    environ = os.environ if environ is None else environ
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        console.err(f"error: {error}")
        return 2
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    debug = bool(getattr(args, "debug", False))
    restore = _configure_logging(debug, console)
    try:
        return args.handler(args, console, environ)
    except UsageError as error:
        console.err(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        console.err("interrupted")
        return 130
    except BrokenPipeError:  # `... | head`: the reader is gone, and that is fine
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as error:  # noqa: BLE001 - every failure becomes one readable line
        if debug:
            console.err(traceback.format_exc().rstrip())
        console.err(f"error: {_describe_error(error)}")
        return 1
    finally:
        restore()


def _describe_error(error: Exception) -> str:
    if isinstance(error, KandjiSnapshotsError):
        return str(error)  # already written for the operator
    module = type(error).__module__ or ""
    if module.startswith(("botocore", "boto3")):
        return f"AWS: {error}"
    if isinstance(error, OSError):
        return f"{error.strerror or error}" + (f": {error.filename}" if getattr(error, "filename", None) else "")
    return f"{type(error).__name__}: {error} (run with --debug for the traceback)"
