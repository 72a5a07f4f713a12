"""A synthetic Kandji fleet: the data behind the simulator, plus mutations between runs.

Scale: only the small device-list items live in memory. Details and app lists are rebuilt
on every request from (seed, device_id) with their own `random.Random` streams, so a
20,000-device fleet with 40 apps each costs a few MB. Mutations are stored as small
per-device overrides; a device's app list is materialised only once an app mutation touches it.

Determinism: everything derives from the seed and the sequence of mutations. The only
wall-clock input is the time used by mutations (`Fleet.clock`, overridable) and
`check_in_all(at=None)`.

Thread safety: one re-entrant lock guards all state. Served objects are never mutated in
place (mutations build new dicts), so the server can JSON-encode a page without the lock.
"""
from __future__ import annotations

import bisect
import copy
import random
import threading
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from .catalog import (
    AGENT_VERSIONS,
    ANDROID_APPS,
    BLUEPRINT_NAMES,
    CHROME,
    DEFAULT_PLATFORM_MIX,
    FIRST_NAMES,
    IOS_APPS,
    LAST_NAMES,
    MAC_APPS,
    MODELS,
    OS_VERSIONS,
    PLATFORMS,
    PROFILES,
    SYSTEM_USERS,
    TAG_NAMES,
    TIME_SINCE_BOOT,
    TV_APPS,
    WINDOWS_APPS,
    App,
    Model,
)

# Generated timestamps are relative to this fixed instant so a seed always gives the same data.
REFERENCE_NOW = datetime(2024, 7, 25, 12, 0, 0, tzinfo=timezone.utc)

# Timestamp spellings seen in real responses; each device picks one per field.
TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%fZ",  # 2024-07-23T14:11:37.150080Z
    "%Y-%m-%d %H:%M:%S.%f+00:00",  # 2024-01-26 16:15:36.087016+00:00
    "%Y-%m-%d %H:%M:%S+00:00",  # 2024-06-17 11:32:35+00:00
    "%Y-%m-%d %H:%M:%S +0000",  # 2024-05-13 20:09:23 +0000
    "%Y-%m-%dT%H:%M:%SZ",  # 2021-05-11T19:45:19Z
)
_TS_FIELDS = ("last_check_in", "first_enrollment", "last_enrollment", "general", "mdm_install",
              "mdm_check_in", "agent_install", "agent_check_in", "profiles")

# The key order of a list item, as the API serves it.
LIST_FIELDS = ("device_id", "device_name", "model", "serial_number", "platform", "os_version",
               "supplemental_build_version", "supplemental_os_version_extra", "last_check_in",
               "user", "asset_tag", "blueprint_id", "blueprint_name", "mdm_enabled",
               "agent_installed", "is_missing", "is_removed", "agent_version", "first_enrollment",
               "last_enrollment", "lost_mode_status", "tags")
# Fields that "older" tenants' devices do not have at all.
OLD_MISSING_FIELDS = ("tags", "lost_mode_status", "supplemental_build_version",
                      "supplemental_os_version_extra")

_SERIAL_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"  # no I/O, like Apple serials


def format_ts(dt: datetime, fmt_index: int) -> str:
    return dt.astimezone(timezone.utc).strftime(TIMESTAMP_FORMATS[fmt_index])


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _bool_str(value: bool) -> str:
    return "True" if value else "False"


@dataclass(eq=False)
class _Device:
    """Everything that must be remembered about one device; the rest is regenerated."""

    index: int
    device_id: str
    platform: str
    model: Model
    build: str
    old: bool
    shortname: str
    full_name: str
    fmt: dict[str, int]
    first_enrolled: datetime
    last_enrolled: datetime
    checked_in: datetime
    agent_version: str
    item: dict[str, Any]  # the list item exactly as served; replaced, never mutated
    check_ins: int = 0  # bumped by check_in_all; drives the volatile detail fields
    filevault: bool | None = None  # override; None = the generated default
    lost_mode: bool = False
    lost_since: datetime | None = None
    lost_until: datetime | None = None  # lost mode was on once, then turned off at this time
    overrides: dict[str, dict[str, Any]] | None = None  # set_detail(): section -> key -> value
    apps: list[dict[str, str]] | None = None  # materialised only after an app mutation


class Fleet:
    """A deterministic synthetic fleet. Build one with `Fleet.generate(count, seed)`."""

    def __init__(self, seed: int = 1, apps_per_device: tuple[int, int] = (20, 40)):
        lo, hi = apps_per_device
        if not 0 <= lo <= hi:
            raise ValueError("apps_per_device must be (min, max) with 0 <= min <= max")
        self.seed = seed
        self.apps_per_device = (lo, hi)
        # Time source for mutations (install dates, enrolment...). Replace for determinism.
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._lock = threading.RLock()
        self._devices: dict[str, _Device] = {}  # insertion order = the API's default order
        self._serials: set[str] = set()
        self._next_index = 0
        self._version = 0  # bumped by every mutation; keys the caches below
        self._order_cache: dict[str, tuple[int, list[dict]]] = {}
        self._prism_cache: tuple[int, list[str], list[int]] | None = None
        bp_rng = random.Random(f"{seed}:blueprints")
        self._blueprints = {name: _uuid(bp_rng) for name in BLUEPRINT_NAMES}

    # ------------------------------------------------------------------ generation
    @classmethod
    def generate(cls, count: int, seed: int = 1, platforms=None,
                 apps_per_device: tuple[int, int] = (20, 40)) -> "Fleet":
        """`platforms`: None (default mix), a dict name -> weight, a list of names, or one name."""
        fleet = cls(seed=seed, apps_per_device=apps_per_device)
        for platform in _platform_plan(count, seed, platforms):
            fleet._add(fleet._make_device(platform))
        return fleet

    def _add(self, dev: _Device) -> None:
        self._devices[dev.device_id] = dev
        self._version += 1

    def _new_serial(self, rng: random.Random, legacy_mac: bool) -> str:
        while True:  # serials are unique within a fleet, even after removals
            if legacy_mac:
                serial = "C02" + "".join(rng.choices(_SERIAL_CHARS, k=9))
            else:
                serial = "".join(rng.choices(_SERIAL_CHARS, k=10))
            if serial not in self._serials:
                self._serials.add(serial)
                return serial

    def _make_device(self, platform: str, enrolled_at: datetime | None = None) -> _Device:
        index = self._next_index
        self._next_index += 1
        rng = random.Random(f"{self.seed}:device:{index}")
        device_id = _uuid(rng)
        model = rng.choice(MODELS[platform])
        os_version, build, sup_build, sup_extra = rng.choice(OS_VERSIONS[platform])
        old = enrolled_at is None and rng.random() < 0.15
        fmt = {name: rng.randrange(len(TIMESTAMP_FORMATS)) for name in _TS_FIELDS}
        serial = self._new_serial(rng, legacy_mac=old and platform == "Mac")

        # Dates: older devices enrolled years ago; missing devices stopped checking in.
        missing = enrolled_at is None and rng.random() < 0.02
        if enrolled_at is not None:
            first = last = checked = enrolled_at
        else:
            first = REFERENCE_NOW - timedelta(days=rng.uniform(700, 1500) if old else rng.uniform(20, 700))
            last = first if rng.random() < 0.7 else first + (REFERENCE_NOW - first) * rng.uniform(0.1, 0.9)
            if missing:  # silent for weeks, but not since before it enrolled
                checked = max(REFERENCE_NOW - timedelta(days=rng.uniform(30, 120)), last + timedelta(hours=1))
            else:
                checked = REFERENCE_NOW - timedelta(seconds=rng.uniform(60, 3 * 86400))
        blank = rng.random()
        first_value: str | None = format_ts(first, fmt["first_enrollment"])
        if (old and blank < 0.25) or blank < 0.01:  # sometimes "" or null
            first_value = "" if blank < 0.12 else None

        # The person: assigned as `user`, or only a local account on an unassigned device.
        first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        shortname = f"{first_name[0]}{last_name}".lower().replace("'", "")
        unassigned_p = {"Mac": 0.06, "iPhone": 0.03, "iPad": 0.35, "AppleTV": 0.9, "Windows": 0.05,
                        "Android": 0.1}[platform]
        assigned = rng.random() >= unassigned_p
        user_id: int | str = rng.randint(1, 5000) if old else _uuid(rng)
        archived = rng.random() < 0.03
        user: dict | str = ""
        if assigned:
            email = f"{first_name}.{last_name}@example.com".lower().replace("'", "")
            user = {"email": email, "name": f"{first_name} {last_name}", "id": user_id,
                    "is_archived": archived}

        room = rng.randint(1, 60)
        if platform == "Mac":
            name = f"{first_name}'s {model.model_name}" if assigned else f"MAC-{serial[-6:]}"
        elif platform == "AppleTV":
            name = f"Conference Room {room}"
        elif platform == "Windows":
            name = f"{first_name}'s PC" if assigned else f"WIN-{serial[-6:]}"
        else:
            name = f"{first_name}'s {platform}" if assigned else f"Shared {platform} {serial[-4:]}"

        if platform == "AppleTV":
            blueprint = "Conference Room TVs"
        elif platform == "iPad" and rng.random() < 0.6:
            blueprint = "Shared iPads"
        else:
            blueprint = rng.choice(BLUEPRINT_NAMES[:4])

        mdm_enabled = rng.random() >= 0.03
        agent_version = rng.choice(AGENT_VERSIONS)
        agent_installed = platform == "Mac" and rng.random() >= 0.05
        lost = platform in ("iPhone", "iPad", "Android") and rng.random() < 0.02
        tags = rng.sample(TAG_NAMES, rng.choice((0, 0, 0, 1, 1, 2)))
        asset_tag = f"AT-{rng.randint(1, 99999):05d}" if rng.random() < 0.4 else ""

        item = {
            "device_id": device_id,
            "device_name": name,
            "model": model.model,
            "serial_number": serial,
            "platform": platform,
            "os_version": os_version,
            "supplemental_build_version": sup_build,
            "supplemental_os_version_extra": sup_extra,
            "last_check_in": format_ts(checked, fmt["last_check_in"]),
            "user": user,
            "asset_tag": asset_tag,
            "blueprint_id": self._blueprints[blueprint],
            "blueprint_name": blueprint,
            "mdm_enabled": mdm_enabled,
            "agent_installed": agent_installed,
            "is_missing": missing,
            "is_removed": False,
            "agent_version": agent_version if agent_installed else "",
            "first_enrollment": first_value,
            "last_enrollment": format_ts(last, fmt["last_enrollment"]),
            "lost_mode_status": "ENABLED" if lost else "",
            "tags": tags,
        }
        if old:
            for key in OLD_MISSING_FIELDS:
                del item[key]
        return _Device(index=index, device_id=device_id, platform=platform, model=model,
                       build=build, old=old, shortname=shortname,
                       full_name=f"{first_name} {last_name}", fmt=fmt, first_enrolled=first,
                       last_enrolled=last, checked_in=checked, agent_version=agent_version,
                       item=item, lost_mode=lost,
                       lost_since=(checked - timedelta(days=2)) if lost else None)

    # ------------------------------------------------------------------ read-only accessors
    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def device_ids(self, ordering: str | None = "device_id") -> list[str]:
        """Device ids sorted like `list_items` (ordering=None: insertion = API default order)."""
        return [item["device_id"] for item in self._ordered(ordering)]

    def list_items(self, ordering: str | None = "device_id") -> list[dict]:
        """The device list items (deep copies), sorted by device_id unless told otherwise.

        `ordering` takes the API's values ("serial_number", "-device_id", ...); None gives the
        insertion order, which is what /devices serves without `ordering`.
        """
        return [_copy_item(item) for item in self._ordered(ordering)]

    def list_item(self, device_id: str) -> dict:
        with self._lock:
            return _copy_item(self._get(device_id).item)

    def platform(self, device_id: str) -> str:
        with self._lock:
            return self._get(device_id).platform

    def details(self, device_id: str) -> dict:
        """The details object the API serves for this device (KeyError if unknown/removed)."""
        with self._lock:
            return self._details(self._get(device_id))

    def apps(self, device_id: str) -> list[dict]:
        """The `apps` list the API serves for this device (KeyError if unknown/removed)."""
        with self._lock:
            return self._served_apps(self._get(device_id))

    def app_count(self, device_id: str) -> int:
        with self._lock:
            return self._app_count(self._get(device_id))

    def prism_app_rows(self) -> Iterator[dict]:
        """Every fleet-wide prism row, in the order /prism/apps pages through them."""
        with self._lock:
            ids = list(self._devices)
        for device_id in ids:
            with self._lock:
                dev = self._devices.get(device_id)
                rows = [] if dev is None else [_prism_row(dev, a) for a in self._served_apps(dev)]
            yield from rows

    def prism_app_total(self) -> int:
        with self._lock:
            return self._prism_index()[2][-1] if self._devices else 0

    # ------------------------------------------------------------------ server helpers
    def _get(self, device_id: str) -> _Device:
        try:
            return self._devices[device_id]
        except KeyError:
            raise KeyError(device_id) from None

    def _ordered(self, ordering: str | None) -> list[dict]:
        """Items in an API ordering; cached per fleet version. Callers must not mutate them."""
        key = ordering or ""
        with self._lock:
            cached = self._order_cache.get(key)
            if cached and cached[0] == self._version:
                return cached[1]
            items = [dev.item for dev in self._devices.values()]
            field = key.lstrip("-")
            if field:
                # Missing/None values sort first; device_id breaks ties so paging stays stable.
                items.sort(key=lambda it: (str(it.get(field) or ""), it["device_id"]),
                           reverse=key.startswith("-"))
            self._order_cache[key] = (self._version, items)
            return items

    def _prism_index(self) -> tuple[int, list[str], list[int]]:
        """(version, device ids, cumulative app counts): lets a prism page seek in O(log n)."""
        cached = self._prism_cache
        if cached and cached[0] == self._version:
            return cached
        ids, cumulative, total = [], [], 0
        for dev in self._devices.values():
            total += self._app_count(dev)
            ids.append(dev.device_id)
            cumulative.append(total)
        self._prism_cache = (self._version, ids, cumulative)
        return self._prism_cache

    def _prism_page(self, offset: int, limit: int) -> tuple[list[dict], int]:
        """Rows [offset, offset+limit) of the fleet-wide app table, and the total row count."""
        with self._lock:
            _, ids, cumulative = self._prism_index()
            total = cumulative[-1] if cumulative else 0
            rows: list[dict] = []
            pos = bisect.bisect_right(cumulative, offset)  # first device holding row `offset`
            while pos < len(ids) and len(rows) < limit:
                dev = self._devices[ids[pos]]
                start = offset + len(rows) - (cumulative[pos - 1] if pos else 0)
                apps = self._served_apps(dev, start, start + limit - len(rows))
                rows.extend(_prism_row(dev, app) for app in apps)
                pos += 1
            return rows, total

    # ------------------------------------------------------------------ details
    def _details(self, dev: _Device) -> dict:
        # Stable draws come first and never depend on mutable state, so a mutation changes
        # exactly the fields it is about and nothing else.
        rng = random.Random(f"{self.seed}:{dev.device_id}:details")
        item, platform, model = dev.item, dev.platform, dev.model
        if platform in ("Windows", "Android"):
            return self._other_details(dev, rng)
        mac, tv, ios = platform == "Mac", platform == "AppleTV", platform in ("iPhone", "iPad")
        boot_index = rng.randrange(len(TIME_SINCE_BOOT))
        supervised = rng.random() < 0.9
        activation_lock = {
            "bypass_code_failed": False,
            "user_activation_lock_enabled": rng.random() < 0.1,
            "device_activation_lock_enabled": rng.random() < 0.3,
            "activation_lock_allowed_while_supervised": rng.random() < 0.5,
            "activation_lock_supported": rng.random() < 0.95,
        }
        default_filevault = rng.random() < 0.85
        recovery_key_type = rng.choice(("Personal", "Personal", "Institutional"))
        ade = rng.random() < 0.7
        agent_offset = timedelta(minutes=rng.uniform(1, 30))
        udid = _uuid(rng).upper()
        used_fraction = rng.uniform(0.1, 0.85)
        external_disk = mac and rng.random() < 0.15
        external_fraction = rng.uniform(0.05, 0.9)
        mac_address = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        ip_address = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        public_ip = f"203.0.113.{rng.randrange(1, 255)}"
        extra_admin, guest = rng.random() < 0.3, rng.random() < 0.2
        profiles = rng.sample(PROFILES if mac else PROFILES[:5], rng.randint(2, 5))
        profile_ids = [_uuid(rng).upper() for _ in profiles]
        remote_desktop = rng.random() < 0.2
        latitude, longitude = rng.uniform(25, 48), rng.uniform(-122, -71)
        carrier = rng.choice(("Verizon", "AT&T", "T-Mobile"))
        apple_silicon = "Apple" in model.processor
        recovery_lock = apple_silicon and rng.random() < 0.4
        firmware_password = not apple_silicon and rng.random() < 0.4
        rotation_scheduled = rng.random() < 0.3
        fv_rotation = rng.random() < 0.3
        cellular_iphone = rng.random() < 0.9
        color = rng.choice(("Space Gray", "Silver", "Midnight", "Starlight"))

        # Volatile fields: change on every check-in, in a way that always differs from the last.
        time_since_boot = TIME_SINCE_BOOT[(boot_index + 7 * dev.check_ins) % len(TIME_SINCE_BOOT)]
        wobble = (dev.check_ins * 1.37) % 5.0  # GB; consecutive check-ins differ by >= 1.37 GB

        def volume(name: str, fmt_name: str, capacity: float, fraction: float, encrypted: str,
                   identifier: str) -> dict:
            used = (capacity - 6.0) * fraction + wobble
            return {"name": name, "format": fmt_name, "percent_used": f"{round(used / capacity * 100)}%",
                    "capacity": f"{capacity:.2f} GB", "available": f"{capacity - used:.2f} GB",
                    "encrypted": encrypted, "identifier": identifier}

        filevault_on = default_filevault if dev.filevault is None else dev.filevault
        agent_on = bool(item["agent_installed"])
        enrolled = format_ts(dev.last_enrolled, dev.fmt["general"])
        first = item.get("first_enrollment")
        general = {
            "device_id": dev.device_id,
            "device_name": item["device_name"],
            "last_enrollment": enrolled,
            "first_enrollment": format_ts(dev.first_enrolled, dev.fmt["general"]) if first else first,
            "model": item["model"],
            "platform": platform,
            "os_version": item["os_version"],
            "system_version": f"{item['os_version']} ({dev.build})",
            "boot_volume": "Macintosh HD" if mac else "",
            "time_since_boot": time_since_boot,
            "last_user": dev.shortname if mac else "",
            "asset_tag": item["asset_tag"],
            "assigned_user": copy.deepcopy(item["user"]),
            "blueprint_name": item["blueprint_name"],
            "blueprint_uuid": item["blueprint_id"],
        }
        for key in ("supplemental_build_version", "supplemental_os_version_extra"):
            if key in item:  # newer OSes and tenants only
                general[key] = item[key]
        details: dict[str, Any] = {
            "general": general,
            "mdm": {
                "mdm_enabled": _bool_str(item["mdm_enabled"]),
                "supervised": _bool_str(supervised),
                "install_date": format_ts(dev.last_enrolled + timedelta(seconds=4), dev.fmt["mdm_install"]),
                "last_check_in": format_ts(dev.checked_in, dev.fmt["mdm_check_in"]),
                "mdm_enabled_user": [dev.full_name] if mac and isinstance(item["user"], dict) else [],
            },
            "activation_lock": activation_lock,
        }
        if mac:
            details["filevault"] = {
                "filevault_enabled": filevault_on,
                "filevault_recoverykey_type": recovery_key_type if filevault_on else "",
                "filevault_prk_escrowed": filevault_on,
                "filevault_next_rotation": format_ts(REFERENCE_NOW + timedelta(days=30), 2)
                if filevault_on and fv_rotation else "",
                "filevault_regen_required": False,
            }
        elif ios:
            details["filevault"] = {"filevault_enabled": None, "filevault_recoverykey_type": "",
                                    "filevault_prk_escrowed": False, "filevault_next_rotation": "",
                                    "filevault_regen_required": False}
        if not tv:  # AppleTV leaves the key out entirely
            details["lost_mode"] = self._lost_mode(dev, latitude, longitude)
        details["automated_device_enrollment"] = (
            {"auto_enroll_eligible": True, "auto_enrolled": supervised} if ade else {})
        details["kandji_agent"] = {}
        if mac:
            details["kandji_agent"] = {
                "agent_installed": _bool_str(agent_on),
                "install_date": (format_ts(dev.last_enrolled + agent_offset, dev.fmt["agent_install"])
                                 if agent_on else ""),
                "last_check_in": format_ts(dev.checked_in, dev.fmt["agent_check_in"]) if agent_on else "",
                "agent_version": item["agent_version"],
            }
            details["hardware_overview"] = {
                "model_name": model.model_name, "model_identifier": model.model_identifier,
                "processor_name": model.processor, "number_of_processors": model.cores,
                "memory": model.memory, "udid": udid, "serial_number": item["serial_number"],
            }
            # A real Mac lists both APFS volumes of its boot container: the sealed, read-only system
            # volume is never FileVault-encrypted ("No" is normal); the Data volume is when FileVault is on.
            volumes = [
                volume("Macintosh HD", "APFS", model.capacity_gb, 0.04, "No", "disk1s5s1"),
                volume("Macintosh HD - Data", "APFS (Encrypted)" if filevault_on else "APFS",
                       model.capacity_gb, used_fraction, "Yes" if filevault_on else "No", "disk1s1"),
            ]
            if external_disk:
                volumes.append(volume("Backup", "ExFAT", 931.51, external_fraction, "", "disk4s2"))
            details["volumes"] = volumes
        else:
            details["hardware_overview"] = {"uuid": udid, "serial_number": item["serial_number"],
                                            "model_identifier": model.model_identifier}
            # iPad volumes come without a name; AppleTV lists none.
            details["volumes"] = [] if tv else [
                volume("" if platform == "iPad" else "Data", "APFS", model.capacity_gb, used_fraction, "", "")]
        if tv:
            details["network"] = {}
        else:
            details["network"] = {
                "local_hostname": f"{dev.shortname}-{model.model_identifier.split(',')[0].lower()}" if mac else "",
                "mac_address": mac_address, "ip_address": ip_address if mac else "",
                "public_ip": public_ip,
            }
        if mac:
            recovery = {
                "recovery_lock_enabled": recovery_lock, "firmware_password_exist": firmware_password,
                "firmware_password_pending": False,
                "password_rotation_scheduled": format_ts(REFERENCE_NOW + timedelta(days=7), 0)
                if (recovery_lock or firmware_password) and rotation_scheduled else None,
                "password_escrowed": recovery_lock or firmware_password,
            }
            if not dev.old:
                recovery["password_has_been_set"] = recovery_lock or firmware_password
            details["recovery_information"] = recovery
            regular = [{"username": dev.shortname, "uid": "501", "path": f"/Users/{dev.shortname}",
                        "name": dev.full_name, "admin": "Yes"}]
            if extra_admin:
                regular.append({"username": "itadmin", "uid": "502", "path": "/Users/itadmin",
                                "name": "IT Admin", "admin": "Yes"})
            if guest:
                regular.append({"username": "guest", "uid": "503", "path": "/Users/guest",
                                "name": "Guest", "admin": "No"})
            details["users"] = {
                "regular_users": regular,
                "system_users": [{"username": username, "uid": uid, "path": home, "name": name,
                                  "admin": "Yes" if uid == "0" else "No"}
                                 for username, uid, name, home in SYSTEM_USERS],
            }
        details["installed_profiles"] = [
            {"name": name, "uuid": pid, "verified": "verified", "identifier": identifier,
             "organization": "Kandji", "payload_types": list(payloads),
             "install_date": format_ts(dev.last_enrolled + timedelta(minutes=i + 1), dev.fmt["profiles"])}
            for i, ((name, identifier, payloads), pid) in enumerate(zip(profiles, profile_ids))
        ]
        details["apple_business_manager"] = {
            "model": model.model_identifier, "color": color, "description": item["model"].upper(),
            "serial_number": item["serial_number"], "device_family": platform,
            "os": {"Mac": "OSX", "AppleTV": "tvOS"}.get(platform, "iOS"),
            "device_assigned_by": "it-admin@example.com",
            "device_assigned_date": format_ts(dev.first_enrolled - timedelta(days=1), 0),
        } if ade else {}
        if mac and not dev.old:
            details["security_information"] = {"remote_desktop_enabled": remote_desktop}
        elif ios and not dev.old:
            details["security_information"] = {}
        if mac:
            details["cellular"] = {}
        elif ios:
            has_sim = platform == "iPhone" and cellular_iphone
            details["cellular"] = {
                "voice_roaming": False, "data_roaming": False,
                "cellular_technology": 2 if has_sim else 0,
                "subscriptions": [{"carrier": carrier, "slot": "CTSubscriptionSlotOne", "is_data_preferred": True}]
                if has_sim else [],
            }
        if "tags" in item:  # older tenants have no tags anywhere
            details["tags"] = list(item["tags"])
        return _apply_overrides(details, dev.overrides)

    def _lost_mode(self, dev: _Device, latitude: float, longitude: float) -> dict:
        """{} until lost mode was first used; then its real keys, the location moving at each check-in."""
        if dev.lost_since is None:
            return {}
        since = format_ts(dev.lost_since, 0)
        section = {
            "lost_mode_status": "ENABLED" if dev.lost_mode else "DISABLED",
            "enabled_by": "it-admin@example.com", "enable_status_at": since,
            "disable_status": "" if dev.lost_mode else "DISABLED",
            "disabled_by": "" if dev.lost_mode else "it-admin@example.com",
            "disable_status_at": "" if dev.lost_mode or dev.lost_until is None else format_ts(dev.lost_until, 0),
            "lock_screen_message": "This device has been lost. Please call IT.",
            "lock_screen_phone_number": "+1 555 0100", "lock_screen_footnote": "Example Corp IT",
            "last_location_status": "", "last_location_status_at": "", "last_location": {},
            "last_location_at": "", "sound_status": "", "sound_status_at": "",
        }
        if dev.lost_mode:  # the device reports where it is at every check-in
            located = format_ts(max(dev.checked_in, dev.lost_since), 0)
            drift = dev.check_ins * 0.0013
            section.update({
                "last_location_status": "ACKNOWLEDGED", "last_location_status_at": located,
                "last_location": {"latitude": f"{latitude + drift:.6f}", "longitude": f"{longitude - drift:.6f}"},
                "last_location_at": located, "sound_status": "ACKNOWLEDGED", "sound_status_at": located,
            })
        return section

    def _other_details(self, dev: _Device, rng: random.Random) -> dict:
        """Windows and Android: shapes not published; a few sections, others `{}` or missing."""
        item = dev.item
        supervised = rng.random() < 0.5
        latitude, longitude = rng.uniform(25, 48), rng.uniform(-122, -71)
        general = {
            "device_id": dev.device_id, "device_name": item["device_name"], "model": item["model"],
            "platform": dev.platform, "os_version": item["os_version"],
            "asset_tag": item["asset_tag"], "assigned_user": copy.deepcopy(item["user"]),
            "blueprint_name": item["blueprint_name"], "blueprint_uuid": item["blueprint_id"],
            "last_enrollment": format_ts(dev.last_enrolled, dev.fmt["general"]),
        }
        if "supplemental_build_version" in item:
            general["supplemental_build_version"] = item["supplemental_build_version"]
        details: dict[str, Any] = {
            "general": general,
            "mdm": {"mdm_enabled": _bool_str(item["mdm_enabled"]),
                    "last_check_in": format_ts(dev.checked_in, dev.fmt["mdm_check_in"])},
            "activation_lock": {},
            "kandji_agent": {},
            "hardware_overview": {"serial_number": item["serial_number"]},
            "network": {},
        }
        if dev.platform == "Android":
            details["mdm"]["supervised"] = _bool_str(supervised)
            details["lost_mode"] = self._lost_mode(dev, latitude, longitude)
            details["cellular"] = {}
        else:
            details["filevault"] = {}
            details["volumes"] = []
        if "tags" in item:
            details["tags"] = list(item["tags"])
        return _apply_overrides(details, dev.overrides)

    # ------------------------------------------------------------------ apps
    def _app_range(self, platform: str) -> tuple[int, int]:
        lo, hi = self.apps_per_device
        if platform == "Mac":
            return lo, hi
        if platform == "AppleTV":
            return 0, min(3, hi)
        if platform in ("Windows", "Android"):
            return min(2, hi), min(len(WINDOWS_APPS if platform == "Windows" else ANDROID_APPS), hi)
        return lo // 2, hi // 2

    def _apps_rng(self, dev: _Device) -> tuple[random.Random, int]:
        # The count is the stream's first draw, so prism paging can count apps without
        # generating them (see _app_count).
        rng = random.Random(f"{self.seed}:{dev.device_id}:apps")
        return rng, rng.randint(*self._app_range(dev.platform))

    def _app_count(self, dev: _Device) -> int:
        return len(dev.apps) if dev.apps is not None else self._apps_rng(dev)[1]

    def _apps_of(self, dev: _Device) -> list[dict[str, str]]:
        """The device's apps without their inventory fields; callers must not mutate the dicts."""
        return dev.apps if dev.apps is not None else self._generate_apps(dev)

    def _served_apps(self, dev: _Device, start: int = 0, stop: int | None = None) -> list[dict[str, str]]:
        """Apps as the API serves them: every inventory gives the rows new sequential ids, and
        creation/modification dates are the inventory's time, shared by every app of the device."""
        apps = self._apps_of(dev)[start:stop]
        first_id = 10_000_000 * (dev.check_ins + 1) + dev.index * 1_000 + start
        inventory = format_ts(dev.checked_in, 0)
        return [{**app, "app_id": str(first_id + i), "creation_date": inventory, "modification_date": inventory}
                for i, app in enumerate(apps)]

    def _generate_apps(self, dev: _Device) -> list[dict[str, str]]:
        rng, count = self._apps_rng(dev)
        mac = dev.platform == "Mac"
        pool = {"Mac": MAC_APPS, "AppleTV": TV_APPS, "Windows": WINDOWS_APPS,
                "Android": ANDROID_APPS}.get(dev.platform, IOS_APPS)
        duplicate = mac and count >= 2 and rng.random() < 0.12  # two copies of Chrome
        if duplicate:
            candidates = [app for app in pool if app is not CHROME]
            wanted = count - 2
        else:
            candidates, wanted = list(pool), count
        chosen = rng.sample(candidates, min(wanted, len(candidates)))
        # Fleets asking for more apps than the catalogue holds get in-house tools.
        for k in range(wanted - len(chosen)):
            chosen.append(App(f"Internal Tool {k + 1}", f"com.example.internal.tool{k + 1}",
                              f"/Applications/Internal Tool {k + 1}.app" if mac else "",
                              (f"1.{k}.0",), "Identified Developer" if mac else "",
                              "Developer ID Application: Example Corp (EXAMPLE123)" if mac else ""))
        chosen.sort(key=lambda app: (app.name.lower(), app.path))
        apps = []
        for app in chosen:
            version = app.versions[0] if rng.random() < 0.7 else rng.choice(app.versions)
            apps.append(self._app_dict(rng, dev, app, app.path, version))
        if duplicate:
            at = next((i for i, a in enumerate(apps) if a["app_name"].lower() > "google chrome"), len(apps))
            apps[at:at] = [
                self._app_dict(rng, dev, CHROME, CHROME.path, CHROME.versions[0]),
                self._app_dict(rng, dev, CHROME, f"/Users/{dev.shortname}/Applications/Google Chrome.app",
                               CHROME.versions[-1]),
            ]
        return apps

    @staticmethod
    def _app_dict(rng: random.Random, dev: _Device, app: App, path: str, version: str) -> dict[str, str]:
        mac = dev.platform == "Mac"
        size = str(rng.randint(1_000_000, 2_000_000_000))
        store = app.source == "App Store"
        vpp = rng.random() < 0.5
        entry = {
            "app_id": "",  # app_id and the dates are filled in per inventory (_served_apps)
            "app_name": app.name,
            "bundle_id": app.bundle_id,
            "bundle_size": size,
            "app_store_vendable": ("True" if store else "") if mac else "True",
            "device_based_vpp": (_bool_str(vpp) if store else "") if mac else _bool_str(vpp),
            "source": app.source,
            "process": app.name if mac else "",
            "signature": app.signature,
            "creation_date": "",
            "modification_date": "",
            "path": path,
            "version": version,
        }
        if app.bundle_id is None:  # the quirk: key missing entirely
            del entry["bundle_id"]
        return entry

    def _materialise_apps(self, dev: _Device) -> list[dict[str, str]]:
        """A private, mutable copy of the device's apps, stored as its override from now on."""
        apps = [dict(app) for app in self._apps_of(dev)]
        dev.apps = apps
        return apps

    # ------------------------------------------------------------------ mutations
    def _replace_item(self, dev: _Device, **changes: Any) -> None:
        # Copy-on-write, so a page being encoded by the server never sees a half-applied change.
        dev.item = {**dev.item, **changes}
        self._version += 1

    def enroll(self, platform: str = "Mac", at: datetime | None = None, position: int | None = None) -> str:
        """Enrol a new (modern, assigned-or-not) device; returns its device_id.

        It comes last in the API's default order (and Prism's), unless `position` puts it earlier:
        Prism's order is not documented, so a new device's rows may land before rows a client already read.
        """
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}")
        with self._lock:
            dev = self._make_device(platform, enrolled_at=at or self.clock())
            self._add(dev)
            if position is not None:
                ordered = list(self._devices.items())
                ordered.insert(position, ordered.pop())
                self._devices = dict(ordered)
            return dev.device_id

    def remove(self, device_id: str) -> dict:
        """Delete a device: it leaves the list and its details/apps answer 404. Returns its item."""
        with self._lock:
            dev = self._get(device_id)
            del self._devices[device_id]
            self._version += 1
            return _copy_item(dev.item)

    def update_os(self, device_id: str, version: str) -> str:
        """Set os_version (list + general.os_version/system_version). Returns the old version."""
        with self._lock:
            dev = self._get(device_id)
            before = dev.item["os_version"]
            known = {v: b for v, b, _, _ in OS_VERSIONS[dev.platform]}
            dev.build = known.get(version) or f"{version.split('.')[0]}A{zlib.crc32(version.encode()) % 900 + 100}"
            self._replace_item(dev, os_version=version)
            return before

    def install_app(self, device_id: str, name: str, bundle_id: str, version: str,
                    path: str | None = None) -> dict:
        """Add an app to a device; returns the new app entry."""
        with self._lock:
            dev = self._get(device_id)
            apps = self._materialise_apps(dev)
            mac = dev.platform == "Mac"
            app = {
                "app_id": "",
                "app_name": name,
                "bundle_id": bundle_id,
                "bundle_size": "52428800",
                "app_store_vendable": "" if mac else "True",
                "device_based_vpp": "" if mac else "True",
                "source": "Identified Developer" if mac else "",
                "process": name if mac else "",
                "signature": f"Developer ID Application: {name}" if mac else "",
                "creation_date": "",
                "modification_date": "",
                "path": path if path is not None else (f"/Applications/{name}.app" if mac else ""),
                "version": version,
            }
            apps.append(app)
            self._version += 1
            return self._served_apps(dev)[-1]

    def _matching(self, apps: list[dict], bundle_id: str, path: str | None) -> list[int]:
        return [i for i, a in enumerate(apps)
                if a.get("bundle_id") == bundle_id and (path is None or a["path"] == path)]

    def remove_app(self, device_id: str, bundle_id: str, path: str | None = None) -> list[dict]:
        """Remove every copy of a bundle (or only the one at `path`); returns the removed apps.

        KeyError when nothing matched.
        """
        with self._lock:
            dev = self._get(device_id)
            if not self._matching(self._apps_of(dev), bundle_id, path):
                raise KeyError(f"{bundle_id} (path={path}) not on {device_id}")
            apps = self._materialise_apps(dev)
            hits = set(self._matching(apps, bundle_id, path))
            dev.apps = [a for i, a in enumerate(apps) if i not in hits]
            self._version += 1
            return [apps[i] for i in sorted(hits)]

    def update_app(self, device_id: str, bundle_id: str, version: str,
                   path: str | None = None) -> list[dict]:
        """Set the version of every copy of a bundle, or only the one at `path`. Returns the
        updated apps (as stored: inventory fields empty). KeyError when nothing matched."""
        with self._lock:
            dev = self._get(device_id)
            if not self._matching(self._apps_of(dev), bundle_id, path):
                raise KeyError(f"{bundle_id} (path={path}) not on {device_id}")
            apps = self._materialise_apps(dev)
            updated = []
            for i in self._matching(apps, bundle_id, path):
                apps[i] = {**apps[i], "version": version}
                updated.append(dict(apps[i]))
            self._version += 1
            return updated

    def set_filevault(self, device_id: str, enabled: bool) -> bool:
        """Mac only: filevault section + boot volume `encrypted`. Returns the previous state."""
        with self._lock:
            dev = self._mac(device_id, "FileVault")
            before = self._details(dev)["filevault"]["filevault_enabled"]
            dev.filevault = bool(enabled)
            self._version += 1
            return before

    def set_agent_installed(self, device_id: str, installed: bool) -> bool:
        """Mac only: list agent_installed/agent_version + kandji_agent. Returns the previous state."""
        with self._lock:
            dev = self._mac(device_id, "the Kandji agent")
            before = dev.item["agent_installed"]
            self._replace_item(dev, agent_installed=bool(installed),
                               agent_version=dev.agent_version if installed else "")
            return before

    def set_mdm_enabled(self, device_id: str, enabled: bool) -> bool:
        return self._set_list_flag(device_id, "mdm_enabled", enabled)

    def set_missing(self, device_id: str, missing: bool) -> bool:
        return self._set_list_flag(device_id, "is_missing", missing)

    def _mac(self, device_id: str, feature: str) -> _Device:
        """The device, which must be a Mac: `feature` exists only there."""
        dev = self._get(device_id)
        if dev.platform != "Mac":
            raise ValueError(f"{feature} exists only on Macs")
        return dev

    def _set_list_flag(self, device_id: str, name: str, value: bool) -> bool:
        """Set a true/false field of the device list item; returns the previous value."""
        with self._lock:
            dev = self._get(device_id)
            before = dev.item[name]
            self._replace_item(dev, **{name: bool(value)})
            return before

    def set_lost_mode(self, device_id: str, enabled: bool) -> bool:
        """List lost_mode_status ("ENABLED"/"", absent on older devices) + details lost_mode."""
        with self._lock:
            dev = self._get(device_id)
            before = dev.lost_mode
            if enabled and not dev.lost_mode:
                dev.lost_since, dev.lost_until = self.clock(), None
            elif not enabled and dev.lost_mode:
                dev.lost_until = self.clock()
            dev.lost_mode = bool(enabled)
            changes = {}
            if "lost_mode_status" in dev.item:
                changes["lost_mode_status"] = "ENABLED" if enabled else ""
            self._replace_item(dev, **changes)
            return before

    def set_detail(self, device_id: str, section: str, key: str, value: Any) -> Any:
        """Set one key of one details section (recovery lock, activation lock, ...); returns the old value.

        The override sticks until set again; the section is created when the platform has none.
        """
        with self._lock:
            dev = self._get(device_id)
            current = self._details(dev).get(section)
            before = current.get(key) if isinstance(current, dict) else None
            dev.overrides = {**(dev.overrides or {})}
            dev.overrides[section] = {**dev.overrides.get(section, {}), key: value}
            self._version += 1
            return before

    def rename(self, device_id: str, name: str) -> str:
        """Set device_name (list, general, prism rows). Returns the old name."""
        with self._lock:
            dev = self._get(device_id)
            before = dev.item["device_name"]
            self._replace_item(dev, device_name=name)
            return before

    def check_in_all(self, at: datetime | None = None) -> datetime:
        """Every device checks in at `at` (default: now).

        Changes only the volatile fields: list last_check_in, details mdm.last_check_in and
        kandji_agent.last_check_in (agent installed), general.time_since_boot, each volume's
        percent_used/available, a lost device's location and its timestamps; and the apps are
        inventoried again (new app_ids, new creation/modification dates). Returns the check-in time.
        """
        at = at or self.clock()
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        with self._lock:
            for dev in self._devices.values():
                dev.checked_in = at
                dev.check_ins += 1
                dev.item = {**dev.item, "last_check_in": format_ts(at, dev.fmt["last_check_in"])}
            self._version += 1
        return at

    def apply_demo_changes(self, at: datetime | None = None) -> dict:
        """A typical "the fleet changed between two runs" step; returns what changed.

        Enrols a Mac, removes a device, updates one device's OS, installs an app on one Mac,
        updates an app on another Mac, turns FileVault off on a third Mac, then check_in_all().
        Each change hits a different device. Needs at least 3 Macs (one with FileVault on)
        and 2 other devices.
        """
        with self._lock:
            order = list(self._devices)
            used: set[str] = set()

            def pick(predicate: Callable[[str], bool]) -> str:
                for device_id in order:
                    if device_id not in used and predicate(device_id):
                        used.add(device_id)
                        return device_id
                raise ValueError("fleet too small or too uniform for apply_demo_changes")

            def is_mac(device_id: str) -> bool:
                return self._devices[device_id].platform == "Mac"

            fv_id = pick(lambda d: is_mac(d) and self.details(d)["filevault"]["filevault_enabled"] is True)

            def single_bundle_app(device_id: str) -> dict | None:
                apps = self._apps_of(self._devices[device_id])
                counts: dict[str, int] = {}
                for a in apps:
                    counts[a.get("bundle_id") or ""] = counts.get(a.get("bundle_id") or "", 0) + 1
                return next((a for a in apps if a.get("bundle_id") and counts[a["bundle_id"]] == 1), None)

            upd_id = pick(lambda d: is_mac(d) and single_bundle_app(d) is not None)
            inst_id = pick(is_mac)
            os_id = pick(lambda d: True)
            order.reverse()  # remove the newest-listed remaining device
            rm_id = pick(lambda d: True)

            target = single_bundle_app(upd_id)
            assert target is not None
            new_app_version = target["version"] + ".1"
            self.update_app(upd_id, target["bundle_id"], new_app_version, path=target["path"])

            installed = self.install_app(inst_id, "Demo Tool", "com.example.demo-tool", "1.0.0")

            os_before = self._devices[os_id].item["os_version"]
            parts = os_before.split(".")
            os_after = ".".join(parts + ["1"]) if len(parts) < 3 else ".".join(parts[:2] + [str(int(parts[2]) + 1)])
            self.update_os(os_id, os_after)

            self.set_filevault(fv_id, False)
            removed = self.remove(rm_id)
            new_id = self.enroll("Mac", at=at)
            at = self.check_in_all(at)
            # As served after the check-in's inventory (new app_id, dates).
            installed = next(a for a in self.apps(inst_id) if a.get("bundle_id") == installed["bundle_id"])
            return {
                "at": at,
                "enrolled": {"device_id": new_id, "platform": "Mac"},
                "removed": {"device_id": rm_id, "serial_number": removed["serial_number"]},
                "os_updated": {"device_id": os_id, "field": "os_version",
                               "before": os_before, "after": os_after},
                "app_installed": {"device_id": inst_id, "app": installed},
                "app_updated": {"device_id": upd_id, "bundle_id": target["bundle_id"],
                                "path": target["path"], "field": "version",
                                "before": target["version"], "after": new_app_version},
                "filevault_disabled": {"device_id": fv_id, "field": "filevault_enabled",
                                       "before": True, "after": False},
                "checked_in": len(self._devices),
            }


def _apply_overrides(details: dict, overrides: dict[str, dict[str, Any]] | None) -> dict:
    for section, values in (overrides or {}).items():
        current = details.get(section)
        details[section] = {**(current if isinstance(current, dict) else {}), **values}
    return details


def _copy_item(item: dict) -> dict:
    """A caller-owned copy of a list item (its only nested values are `user` and `tags`)."""
    copied = dict(item)
    if isinstance(copied["user"], dict):
        copied["user"] = dict(copied["user"])
    if "tags" in copied:
        copied["tags"] = list(copied["tags"])
    return copied


def _prism_row(dev: _Device, app: dict) -> dict:
    """One fleet-wide app row, with Prism's own column names.

    Prism names the app `name`, carries the device's columns (`device__name`, ...), calls the
    source `obtained_from` and the process `executable`, has `short_version`, `bundle_name`,
    its own inventory times (`created_at`, ... with `+00:00`), many null keys, and no
    `app_id`, `source`, `process`, `creation_date` or size/VPP fields. Missing or "" values are null.
    """
    item = dev.item
    user = item["user"] if isinstance(item["user"], dict) else {}
    version = app["version"] if app["version"] not in ("", "No value") else None
    signature = app["signature"] or None
    developer = signature.split(": ", 1)[-1].rsplit(" (", 1)[0] if signature and ": " in signature else None
    inventory = format_ts(dev.checked_in, 1)
    return {
        "device_id": item["device_id"],
        "device__name": item["device_name"],
        "device__family": item["platform"],
        "device__user_id": user.get("id"),
        "device__user_name": user.get("name"),
        "device__user_email": user.get("email"),
        "blueprint_id": item["blueprint_id"],
        "blueprint_name": item["blueprint_name"],
        "serial_number": item["serial_number"],
        "model_id": dev.model.model_identifier or None,
        "asset_tag": item["asset_tag"] or None,
        "tags": None,
        "name": app["app_name"],
        "bundle_id": app.get("bundle_id") or None,
        "version": version,
        "short_version": version.split(" ")[0] if version else None,
        "path": app["path"] or None,
        "obtained_from": app["source"] or None,
        "signature": signature,
        "bundle_name": app["app_name"],
        "executable": app["process"] or None,
        "category": None,
        "developer_name": developer,
        "architecture": None,
        "min_os_version": None,
        "team_id": None,
        "created_at": inventory,
        "updated_at": inventory,
        "last_collected_at": inventory,
    }


def _platform_plan(count: int, seed: int, platforms) -> list[str]:
    """Exactly how many of each platform (largest remainder), shuffled deterministically.

    Every weighted platform appears once the fleet is at least as big as the platform set.
    """
    if platforms is None:
        weights = dict(DEFAULT_PLATFORM_MIX)
    elif isinstance(platforms, str):
        weights = {platforms: 1.0}
    elif isinstance(platforms, dict):
        weights = {p: float(w) for p, w in platforms.items() if w > 0}
    else:
        weights = {p: 1.0 for p in platforms}
    unknown = set(weights) - set(PLATFORMS)
    if unknown or not weights:
        raise ValueError(f"platforms must be among {PLATFORMS}, got {sorted(unknown) or 'none'}")
    total = sum(weights.values())
    exact = {p: count * w / total for p, w in weights.items()}
    quota = {p: int(x) for p, x in exact.items()}
    for p in sorted(exact, key=lambda p: (quota[p] - exact[p], PLATFORMS.index(p)))[:count - sum(quota.values())]:
        quota[p] += 1
    if count >= len(weights):
        for p in weights:
            while quota[p] == 0:  # take one from the biggest platform
                quota[max(quota, key=lambda q: quota[q])] -= 1
                quota[p] += 1
    plan = [p for p in PLATFORMS if p in quota for _ in range(quota[p])]
    random.Random(f"{seed}:platforms").shuffle(plan)
    return plan
