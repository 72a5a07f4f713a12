"""What the operator sees: stdout and stderr with the token redacted and every character that a terminal
would act on shown as an escape (a device named with ESC sequences cannot clear the screen or plant a
link), and the package's log records on stderr (around the progress bar). Also the usage error every
command may raise (exit code 2)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from kandji_snapshots.cli.progress import ProgressBar
from kandji_snapshots.inert_text import is_unsafe

COMMAND = "kandji-snapshots"  # the console script `pip install .` (or pipx) puts on the PATH


def command_name(argv0: str | None = None) -> str:
    """How the operator started this, as it can be typed again: `kandji-snapshots` (or the path given,
    e.g. .venv/bin/kandji-snapshots), or `python -m kandji_snapshots`."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0) == COMMAND:
        return argv0 if os.sep in argv0 and os.path.dirname(argv0) not in os.get_exec_path() else COMMAND
    if argv0.endswith("__main__.py") or argv0 in ("-m", "-c", ""):
        return "python -m kandji_snapshots"
    return COMMAND


PROG = command_name()  # in the usage text and in the "next" hints

# The domain's errors end with what the Lambda does next; at a terminal the next step is the operator's.
_LAMBDA_REMEDIES = (
    ("the next scheduled run will try again", "run the command again later"),
    ("and store it in the Kandji secret", "and pass it with --token-file, --secret-id or KANDJI_API_TOKEN"),
)


def for_terminal(message: str) -> str:
    """A domain error's message with the Lambda's next step replaced by the operator's."""
    for lambda_text, terminal_text in _LAMBDA_REMEDIES:
        message = message.replace(lambda_text, terminal_text)
    return message


def terminal_safe(text: str) -> str:
    """`text` with every control, format or separator character but the line break written as its escape
    (`\\u001b`), so a value from the fleet prints as what it is and the terminal never acts on it. In JSON
    text the escape is the same character, so JSON Lines stay valid JSON."""
    if not any(char != "\n" and is_unsafe(char) for char in text):
        return text
    return "".join(_escaped(char) if char != "\n" and is_unsafe(char) else char for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as its UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


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
        sys.stdout.write(terminal_safe(self.redact(text)) + "\n")

    def err(self, text: str) -> None:
        sys.stderr.write(terminal_safe(self.redact(text)) + "\n")
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
            sys.stderr.write(terminal_safe(text) + "\n")
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
