"""What the Kandji API's refusals mean and what to do about each: plain data, written once.

The client's errors and `check`'s report are both worded from this table, so a run that fails and
a `check` of the same token give the same cause and the same fix. Kandji answers 401 and 403
loosely (a token stripped of its permissions gets a 401, a wrong one may get a 403), so both name
both causes. `{permission}` is filled in from permissions.py, `{store}` by the caller (the
collector keeps the token in its secret, the CLI takes it from a file, a secret or the environment).
"""

from __future__ import annotations

from dataclasses import dataclass

from kandji_snapshots.errors import DeviceNotFound, KandjiApiError, KandjiAuthError

API_URL_SETTING = "Kandji > Settings > Access > API URL"


@dataclass(frozen=True)
class StatusAdvice:
    reason: str  # how the status reads in a message
    cause: str  # why Kandji answers it
    fix: str = ""  # what to do about it
    error: type[KandjiApiError] = KandjiApiError  # what the client raises: none of these is retried

    def message(self, where: str, **context: object) -> str:
        """`GET /api/v1/... answered <reason>: <cause>. <fix>.`, the placeholders filled from `context`."""
        advice = f"{self.reason}: {self.cause}." + (f" {self.fix}." if self.fix else "")
        return f"{where} answered {advice.format(**context)}"


TOKEN_REFUSED = StatusAdvice(
    "401 Unauthorized",
    "the API token is wrong, revoked or expired, or it lacks the permission {permission} (Kandji answers 401 "
    "for both)",
    "Check the token's permissions in Kandji (Settings > Access > API Token); if they are right, create a new "
    "token and {store}", KandjiAuthError)

PERMISSION_MISSING = StatusAdvice(
    "403 Forbidden",
    "the API token lacks the permission {permission}, or the token is wrong or revoked (Kandji answers 403 for "
    "both)",
    "Add the permission to the token in Kandji (Settings > Access > API Token); if it is there, create a new "
    "token and {store}", KandjiAuthError)

NOT_THE_API = StatusAdvice(
    "404 Not Found on {host}",
    "the URL does not lead to a Kandji tenant's API",
    "Check the tenant name and the region (US: <tenant>.api.kandji.io, EU: <tenant>.api.eu.kandji.io) in the "
    f"API URL ({API_URL_SETTING})")

REDIRECTED = StatusAdvice(
    "a {status} redirect{to}",
    "{host} is not the API host (the collector never follows redirects, so the token never leaves the "
    "tenant's host)",
    f"Use the API URL shown in Kandji ({API_URL_SETTING.removeprefix('Kandji > ')})")

DEVICE_GONE = StatusAdvice("404", "the device was unenrolled during the run", error=DeviceNotFound)  # skipped


def advice_for(status: int) -> StatusAdvice | None:
    """The advice for a refusal no retry can change (401, 403, 404 for the API, a redirect), else None."""
    if status == 401:
        return TOKEN_REFUSED
    if status == 403:
        return PERMISSION_MISSING
    if status == 404:
        return NOT_THE_API
    if 300 <= status < 400:
        return REDIRECTED
    return None
