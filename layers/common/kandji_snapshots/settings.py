"""Configuration from the environment, read once per invocation, checked early."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kandji_snapshots.errors import ConfigurationError

DEFAULT_REQUESTS_PER_SECOND = 45.0  # Kandji enforces 50/s; leave room for clock skew and other clients
DEFAULT_MAX_WORKERS = 16
# Of Kandji's 10,000 requests/hour per tenant: what one (hourly) run may spend, and what it
# must leave for the tenant's other integrations when the API reports what is left.
DEFAULT_REQUEST_BUDGET = 8_000
DEFAULT_HOURLY_RESERVE = 1_000


def required_setting(env: Mapping[str, str], name: str, what: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigurationError(f"Environment variable {name} is not set: it must name {what}.")
    return value


def number_setting(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"Environment variable {name}={raw!r} is not a number.") from None
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"Environment variable {name}={raw} must be between {minimum:g} and {maximum:g}.")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return (env.get(name) or "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class CollectorEnvironment:
    secret_id: str
    bucket: str
    api_url: str | None
    allow_insecure_localhost: bool
    requests_per_second: float
    max_workers: int
    request_budget: int
    hourly_reserve: int
    apps_source: str
    max_fleet_drop_percent: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "CollectorEnvironment":
        env = os.environ if env is None else env
        return cls(
            secret_id=required_setting(env, "KANDJI_SECRET_ID", "the Secrets Manager secret holding the Kandji token"),
            bucket=required_setting(env, "SNAPSHOT_BUCKET", "the S3 bucket for snapshots"),
            api_url=(env.get("KANDJI_API_URL") or "").strip() or None,
            allow_insecure_localhost=_flag(env, "KANDJI_ALLOW_INSECURE_LOCALHOST"),
            requests_per_second=number_setting(env, "KANDJI_MAX_REQUESTS_PER_SECOND", DEFAULT_REQUESTS_PER_SECOND,
                                        minimum=0.1, maximum=1000),  # above 50 only for the simulator
            max_workers=int(number_setting(env, "KANDJI_MAX_WORKERS", DEFAULT_MAX_WORKERS, minimum=1, maximum=64)),
            request_budget=int(number_setting(env, "KANDJI_REQUEST_BUDGET", DEFAULT_REQUEST_BUDGET,
                                       minimum=10, maximum=1_000_000)),
            hourly_reserve=int(number_setting(env, "KANDJI_HOURLY_RESERVE", DEFAULT_HOURLY_RESERVE,
                                       minimum=0, maximum=10_000)),
            apps_source=(env.get("KANDJI_APPS_SOURCE") or "per-device").strip().lower(),
            max_fleet_drop_percent=number_setting(env, "KANDJI_MAX_FLEET_DROP_PERCENT", 50.0, minimum=0, maximum=100),
        )
