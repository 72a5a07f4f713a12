"""Errors that tell the operator what went wrong and what to do about it.

Every message is written for the person reading a failed run's log: it names the
thing that failed and the fix. None of them ever contains the API token.
"""


class KandjiSnapshotsError(Exception):
    """Base class: a run failed and no snapshot was committed."""


class ConfigurationError(KandjiSnapshotsError):
    """The deployment is misconfigured (secret, URL, environment)."""


class KandjiApiError(KandjiSnapshotsError):
    """The Kandji API answered in a way the collector cannot work with."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None,
                 cause: str | None = None):
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint
        # What went wrong without what it means for the run ("Nothing was committed"): a caller that goes
        # on without this read (a posture category, carried from its last read) says what it means itself.
        self.cause = cause or message


class KandjiAuthError(KandjiApiError):
    """401/403: the token is wrong, revoked or lacks a permission. Never retried."""


class DeviceNotFound(KandjiApiError):
    """404 for one device: it was unenrolled between the list call and this one."""


class DeadlineExceeded(KandjiSnapshotsError):
    """The run would not finish before the Lambda's time runs out."""


class RateLimitExhausted(DeadlineExceeded):
    """Kandji's rate limit kept the run from finishing: 429s past every retry, or no time left to wait."""


class MalformedResponse(KandjiApiError):
    """A 200 whose body is not the JSON shape the endpoint documents."""


class SnapshotWriteError(KandjiSnapshotsError):
    """Writing a snapshot object failed; the snapshot was not committed."""


class SnapshotConflict(KandjiSnapshotsError):
    """A snapshot with this run's id is already committed (two runs started in the same second)."""
