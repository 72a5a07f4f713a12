"""What counts as a change, and how serious it is: the two tables a reviewer should read.

Field names are the dotted paths the differ reports: devices columns as they are
(`os_version`, `user.email`), device_details columns by their path inside the
row (`filevault.filevault_enabled`, `general.os_version`), arrays of objects
keyed by each element's `name` (`volumes.Macintosh HD.encrypted`) or index.
Fields the schema has no column for (the rows' `extra`) are compared one by one
as `extra.<their path in the API>` (`extra.security_information.firewall_enabled`).

1. IGNORED_FIELDS: fields that move on every check-in. A change to them alone is
   no change. Patterns are fnmatch-style (`*` matches anything, dots included);
   the environment variable DIFF_IGNORE_FIELDS (comma-separated) adds more. A
   pattern also covers everything below what it matches (`lost_mode` ignores the
   whole section, `extra` every untyped field), and `extra.<path>` is ignored
   whenever `<path>` is (a value that did not fit its column moves just the same).
2. SEVERITY_RULES: which before -> after transitions are security relevant
   (`high`); every other change is `info`. An event is as severe as its most
   severe change; `device_removed` is always `high`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

INFO = "info"
HIGH = "high"
SEVERITIES = (INFO, HIGH)  # lowest first

# Fields that change on every check-in (or every snapshot) and so say nothing.
DEFAULT_IGNORED_FIELDS: tuple[str, ...] = (
    "snapshot_id",                 # per snapshot, not per device
    "fetched_at",                  # when the collector read the device
    "last_check_in",               # devices table
    "mdm.last_check_in",
    "kandji_agent.last_check_in",
    "general.time_since_boot",
    "volumes.*.available",         # disk usage drifts all the time
    "volumes.*.percent_used",
    # A lost device reports where it is at every check-in: where it is, not how it is configured.
    "lost_mode.last_location",
    "lost_mode.last_location_at",
    "lost_mode.last_location_status_at",
    "lost_mode.sound_status_at",
    # When a device last reported a Prism category to Kandji: moves on its own, says nothing.
    "posture.*.last_collected_at",
)
EXTRA_PREFIX = "extra."

IGNORE_FIELDS_ENV = "DIFF_IGNORE_FIELDS"


# --- transitions -------------------------------------------------------------

def turned_off(before: Any, after: Any) -> bool:
    return before is True and after is False


def turned_on(before: Any, after: Any) -> bool:
    return before is False and after is True


_LOST_MODE_OFF = frozenset({"", "disabled", "disable", "off", "false", "none", "inactive", "not enabled"})
_LOST_MODE_ON = frozenset({"enabled", "enable", "on", "true", "active", "lost", "pending", "enable pending",
                           "enabling"})


def lost_mode_enabled(before: Any, after: Any) -> bool:
    """From empty or disabled to an enabled-like status (Kandji/Apple send ENABLED, Enabled, ...)."""
    was_off = before is None or str(before).strip().lower() in _LOST_MODE_OFF
    return was_off and after is not None and str(after).strip().lower() in _LOST_MODE_ON


_VERSION = re.compile(r"\d+(?:\.\d+)*")


def version_key(value: Any) -> tuple[int, ...] | None:
    """`14.5`, `14.6.1`, `17.5.1 (21F90)` -> (14, 5), ...; None when there is no version number."""
    match = _VERSION.search(str(value)) if value is not None else None
    if not match:
        return None
    parts = [int(part) for part in match.group().split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # 14.0 == 14
        parts.pop()
    return tuple(parts)


def downgraded(before: Any, after: Any) -> bool:
    old, new = version_key(before), version_key(after)
    return old is not None and new is not None and new < old


_BUILD = re.compile(r"\d+(?:\.\d+)+")


def build_downgraded(before: Any, after: Any) -> bool:
    """Windows' `22631.3880` -> `22631.3737`; Apple's `22F770820d` builds are not numbers: never."""
    if not all(isinstance(value, str) and _BUILD.fullmatch(value) for value in (before, after)):
        return False
    return downgraded(before, after)


def changed(before: Any, after: Any) -> bool:
    """Either way, as long as both sides are reported (a section appearing is not a change of it):
    activation lock going on is as notable as going off."""
    return before != after and before is not None and after is not None


def stopped_reporting(before: Any, after: Any) -> bool:
    """A version that was reported is gone: XProtect has no on/off column, only its version."""
    return before not in (None, "") and after in (None, "")


# Apple's secure boot levels, strongest first (Apple silicon: full/reduced/permissive; T2: full/medium/off).
_SECURE_BOOT_RANK = {"full": 3, "medium": 2, "reduced": 2, "permissive": 1, "off": 0, "none": 0, "disabled": 0}


def secure_boot_rank(value: Any) -> int | None:
    words = str(value).strip().lower().split() if value is not None else []
    return _SECURE_BOOT_RANK.get(words[0]) if words else None


def lowered(before: Any, after: Any) -> bool:
    old, new = secure_boot_rank(before), secure_boot_rank(after)
    return old is not None and new is not None and new < old


@dataclass(frozen=True)
class SeverityRule:
    fields: tuple[str, ...]
    applies: Callable[[Any, Any], bool]
    reason: str


# The security-relevant transitions. Everything not listed here is `info`.
SEVERITY_RULES: tuple[SeverityRule, ...] = (
    SeverityRule(("filevault.filevault_enabled",), turned_off, "FileVault turned off"),
    SeverityRule(("agent_installed", "kandji_agent.agent_installed"), turned_off, "Kandji agent removed"),
    SeverityRule(("mdm_enabled", "mdm.mdm_enabled"), turned_off, "MDM disabled"),
    SeverityRule(("is_missing",), turned_on, "device went missing"),
    SeverityRule(("lost_mode_status", "lost_mode.lost_mode_status"), lost_mode_enabled, "lost mode enabled"),
    SeverityRule(("os_version", "general.os_version"), downgraded, "OS downgraded"),
    SeverityRule(("supplemental_build_version", "general.supplemental_build_version"), build_downgraded,
                 "OS build downgraded"),
    SeverityRule(("recovery_information.recovery_lock_enabled",), turned_off, "recovery lock turned off"),
    SeverityRule(("recovery_information.firmware_password_exist",), turned_off, "firmware password removed"),
    SeverityRule(("activation_lock.user_activation_lock_enabled", "activation_lock.device_activation_lock_enabled",
                  "activation_lock.activation_lock_allowed_while_supervised"), changed, "activation lock changed"),
    SeverityRule(("activation_lock.bypass_code_failed",), turned_on, "activation lock bypass code failed"),
    # Prism posture (device_posture, reported as posture.<category>.<column>).
    SeverityRule(("posture.filevault.status",), turned_off, "FileVault turned off"),
    SeverityRule(("posture.application_firewall.status",), turned_off, "firewall turned off"),
    SeverityRule(("posture.gatekeeper_and_xprotect.gatekeeper_status",), turned_off, "Gatekeeper disabled"),
    SeverityRule(("posture.gatekeeper_and_xprotect.xprotect_version",), stopped_reporting, "XProtect disabled"),
    SeverityRule(("posture.startup_settings.sip",), turned_off, "SIP disabled"),
    SeverityRule(("posture.startup_settings.secure_boot_level",), lowered, "secure boot lowered"),
    SeverityRule(("posture.activation_lock.activation_lock_enabled",
                  "posture.activation_lock.device_activation_lock_enabled",
                  "posture.activation_lock.user_activation_lock_enabled"), changed, "activation lock changed"),
)

FILEVAULT_FIELDS = ("filevault.filevault_enabled", "posture.filevault.status")  # one fact: diff/posture_changes.py

# Change types that are high whatever their content.
CHANGE_TYPE_SEVERITY: dict[str, str] = {"device_removed": HIGH}

_RULES_BY_FIELD: dict[str, list[SeverityRule]] = {}
for _rule in SEVERITY_RULES:
    for _field in _rule.fields:
        _RULES_BY_FIELD.setdefault(_field, []).append(_rule)


def highest(severities: Iterable[str]) -> str:
    return max(severities, key=SEVERITIES.index, default=INFO)


def parse_ignore_fields(raw: str | None) -> tuple[str, ...]:
    return tuple(pattern.strip() for pattern in (raw or "").split(",") if pattern.strip())


class ChangeRules:
    """The ignore list and the severity table, ready to apply."""

    def __init__(self, extra_ignored_fields: Iterable[str] = ()):
        self.ignored_fields = tuple(dict.fromkeys((*DEFAULT_IGNORED_FIELDS, *extra_ignored_fields)))
        self._ignored = re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in self.ignored_fields))
        self._verdicts: dict[str, bool] = {}  # field names repeat across devices

    @classmethod
    def from_setting(cls, raw: str | None) -> "ChangeRules":
        return cls(parse_ignore_fields(raw))

    def is_ignored(self, field: str) -> bool:
        verdict = self._verdicts.get(field)
        if verdict is None:
            verdict = self._matches(field) or (field.startswith(EXTRA_PREFIX)
                                               and self._matches(field[len(EXTRA_PREFIX):]))
            if len(self._verdicts) < 100_000:
                self._verdicts[field] = verdict
        return verdict

    def _matches(self, field: str) -> bool:
        """The field, or anything it lies below (`lost_mode` covers `lost_mode.enabled_by`)."""
        parts = field.split(".")
        return any(self._ignored.match(".".join(parts[:end])) for end in range(len(parts), 0, -1))

    @staticmethod
    def assess(field: str, before: Any, after: Any) -> tuple[str, str | None]:
        """(severity, reason) of one field's change."""
        for rule in _RULES_BY_FIELD.get(field, ()):
            if rule.applies(before, after):
                return HIGH, rule.reason
        return INFO, None


# --- details fields that repeat a devices-list field ---------------------------

def _same_version(list_value: Any, details_value: Any) -> bool:
    key = version_key(list_value)
    return key is not None and key == version_key(details_value)


def _same_text(list_value: Any, details_value: Any) -> bool:
    return list_value is not None and str(list_value).strip().lower() == str(details_value).strip().lower()


# device_details field -> (devices field, "say the same"). The device list is read fresh on every run,
# details only when refreshed (rolling refresh carries them), so one OS update would be reported
# twice: from the list, and again when the details are re-read. A details change that only brings
# the details in line with the list's current value is already reported (or being reported) by the
# list, and is left out. FileVault is not here: Prism and the details are one fact whose transition
# either source may report (diff/posture_changes.py), so a catch-up is judged against that fact.
DETAILS_MIRRORS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "general.os_version": ("os_version", _same_version),
    "general.system_version": ("os_version", _same_version),  # "14.6 (23G80)"
    "mdm.mdm_enabled": ("mdm_enabled", _same_text),
    "kandji_agent.agent_installed": ("agent_installed", _same_text),
    "lost_mode.lost_mode_status": ("lost_mode_status", _same_text),
    "general.supplemental_build_version": ("supplemental_build_version", _same_text),
    # Prism's device_information is read every run, like the list: the same OS update, said again.
    "posture.device_information.os_version": ("os_version", _same_version),
    "posture.device_information.display_os_version": ("os_version", _same_version),
}


def repeats_device_list(field: str, details_after: Any, device_row: dict[str, Any]) -> bool:
    """True when a details change only catches up with what the devices row already says."""
    mirror = DETAILS_MIRRORS.get(field)
    return mirror is not None and mirror[1](device_row.get(mirror[0]), details_after)
