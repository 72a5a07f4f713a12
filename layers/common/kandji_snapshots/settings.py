"""Configuration from the environment, read once per invocation, checked early."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.snapshots.table_io import DEFAULT_ROWS_PER_PART

DEFAULT_REQUESTS_PER_SECOND = 45.0  # Kandji enforces 50/s; leave room for clock skew and other clients
DEFAULT_MAX_WORKERS = 16
# Of Kandji's 10,000 requests/hour per tenant: what one (hourly) run may spend, and what it
# must leave for the tenant's other integrations when the API reports what is left.
DEFAULT_REQUEST_BUDGET = 8_000
DEFAULT_HOURLY_RESERVE = 1_000
# Read by the Lambda and the CLI alike: plain http to the simulator on 127.0.0.1.
INSECURE_LOCALHOST_ENV = "KANDJI_ALLOW_INSECURE_LOCALHOST"
API_URL_ENV = "KANDJI_API_URL"  # the API URL when the secret holds a bare token


def required_setting(env: Mapping[str, str], name: str, what: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigurationError(f"Environment variable {name} is not set: it must name {what}.")
    return value


def snapshot_bucket(env: Mapping[str, str]) -> str:
    """The bucket every function works in."""
    return required_setting(env, "SNAPSHOT_BUCKET", "the S3 bucket for snapshots")


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


def flag_setting(env: Mapping[str, str], name: str) -> bool:
    """An on/off variable: 1, true or yes (any case) turn it on; anything else, or nothing, leaves it off."""
    return (env.get(name) or "").strip().lower() in ("1", "true", "yes")


APPS_SOURCES = ("per-device", "prism", "auto")


@dataclass(frozen=True)
class CollectorSettings:
    """How a collector run paces, limits and writes itself, whoever runs it (Lambda, CLI, benchmark, test)."""

    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    max_workers: int = DEFAULT_MAX_WORKERS  # requests in flight; the shared rate limiter sets the pace, not this
    request_budget: int | None = DEFAULT_REQUEST_BUDGET  # None: no cap per run
    hourly_reserve: int = DEFAULT_HOURLY_RESERVE
    apps_source: str = "per-device"  # or "prism" (fleet-wide), or "auto" (prism when the token may)
    # A device list that shrank by more than this since the last snapshot is more likely an API
    # fault than a mass unenrolment: refuse it rather than report every missing device removed.
    max_fleet_drop_percent: float = 50.0
    rows_per_part: int = DEFAULT_ROWS_PER_PART
    temp_dir: str | None = None  # where Prism's rows are sorted (Lambda: /tmp)
    tenant_sources: str = "all"  # comma-separated (collect/tenant_sources.SOURCE_NAMES), "all" or "none"
    audit_backfill_days: int = 30
    audit_overlap_hours: int = 24

    def __post_init__(self) -> None:
        if self.apps_source not in APPS_SOURCES:
            raise ConfigurationError(f"KANDJI_APPS_SOURCE={self.apps_source!r}: expected one of "
                                     f"{', '.join(APPS_SOURCES)}.")


@dataclass(frozen=True)
class CollectorEnvironment:
    secret_id: str
    bucket: str
    api_url: str | None
    allow_insecure_localhost: bool
    settings: CollectorSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "CollectorEnvironment":
        env = os.environ if env is None else env
        return cls(
            secret_id=required_setting(env, "KANDJI_SECRET_ID", "the Secrets Manager secret holding the Kandji token"),
            bucket=snapshot_bucket(env),
            api_url=(env.get(API_URL_ENV) or "").strip() or None,
            allow_insecure_localhost=flag_setting(env, INSECURE_LOCALHOST_ENV),
            settings=CollectorSettings(
                requests_per_second=number_setting(env, "KANDJI_MAX_REQUESTS_PER_SECOND", DEFAULT_REQUESTS_PER_SECOND,
                                                   minimum=0.1, maximum=1000),  # above 50 only for the simulator
                max_workers=int(number_setting(env, "KANDJI_MAX_WORKERS", DEFAULT_MAX_WORKERS, minimum=1, maximum=64)),
                request_budget=int(number_setting(env, "KANDJI_REQUEST_BUDGET", DEFAULT_REQUEST_BUDGET,
                                                  minimum=10, maximum=1_000_000)),
                hourly_reserve=int(number_setting(env, "KANDJI_HOURLY_RESERVE", DEFAULT_HOURLY_RESERVE,
                                                  minimum=0, maximum=10_000)),
                apps_source=(env.get("KANDJI_APPS_SOURCE") or "per-device").strip().lower(),
                max_fleet_drop_percent=number_setting(env, "KANDJI_MAX_FLEET_DROP_PERCENT", 50.0,
                                                      minimum=0, maximum=100),
                tenant_sources=(env.get("KANDJI_TENANT_SOURCES") or "all").strip().lower(),
                audit_backfill_days=int(number_setting(env, "KANDJI_AUDIT_BACKFILL_DAYS", 30, minimum=0, maximum=365)),
                audit_overlap_hours=int(number_setting(env, "KANDJI_AUDIT_OVERLAP_HOURS", 24,
                                                       minimum=0, maximum=24 * 30)),
            ),
        )
