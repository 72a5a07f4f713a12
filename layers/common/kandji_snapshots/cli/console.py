"""What the operator sees: stdout and stderr with the token redacted, and the package's log records on
stderr (around the progress bar). Also the usage error every command may raise (exit code 2)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from kandji_snapshots.cli.progress import ProgressBar

PROG = "python -m kandji_snapshots"  # how the operator runs it, in the usage text and in hints


class UsageError(Exception):
    """The command line itself is wrong: exit code 2."""


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


LOG_HANDLER = _CliLogHandler()


def configure_logging(debug: bool, console: Console) -> Callable[[], None]:
    """Warnings of the package on stderr (debug: everything); returns what undoes it."""
    package = logging.getLogger("kandji_snapshots")
    client = logging.getLogger("kandji_snapshots.kandji.client")
    saved = (package.level, package.propagate, client.level)
    LOG_HANDLER.console = console
    package.addHandler(LOG_HANDLER)
    package.setLevel(logging.DEBUG if debug else logging.WARNING)
    package.propagate = False
    # Retries are expected under rate limiting; they are summed up at the end instead of one line each.
    client.setLevel(logging.NOTSET if debug else logging.ERROR)

    def restore() -> None:
        package.removeHandler(LOG_HANDLER)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        client.setLevel(saved[2])
        LOG_HANDLER.bar = None

    return restore
