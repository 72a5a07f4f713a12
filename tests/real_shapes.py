"""The real response shapes (../shared/kandji-api.md, "Real responses") and what a snapshot of them must hold:
checked on rows the handlers wrote through HTTP and moto (test_pipeline_end_to_end.py) and on rows of a larger
fleet collected in memory (test_fleet_rules.py)."""

from __future__ import annotations

from kandji_snapshots.snapshots.normalize import app_rows
from simulator import Fleet

# Prism has no app_id, bundle size or VPP columns; Prism-only descriptive keys go to extra.
PER_DEVICE_ONLY = ("app_id", "bundle_size", "app_store_vendable", "device_based_vpp", "extra")


def real_shapes_fleet(count: int, seed: int) -> Fleet:
    """Every platform, Windows and Android included, and some devices already lost (moving)."""
    fleet = Fleet.generate(count, seed=seed)
    lost = [d for d in fleet.device_ids() if fleet.platform(d) in ("iPhone", "iPad", "Android")][:4]
    for device_id in lost:
        fleet.set_lost_mode(device_id, True)
    return fleet


def assert_typed(fleet: Fleet, devices: list[dict], details: list[dict], apps: list[dict]) -> None:
    """Every device, detail and app of the real shapes in typed columns: nothing left in extra."""
    assert len(devices) == len(details) == len(fleet)
    assert len(apps) == sum(fleet.app_count(d) for d in fleet.device_ids())
    assert [row for row in devices + details + apps if row["extra"] is not None] == []
    assert {row["platform"] for row in devices} == {"Mac", "iPhone", "iPad", "AppleTV", "Windows", "Android"}
    platform = {row["device_id"]: row["platform"] for row in devices}
    macs = [row for row in details if platform[row["device_id"]] == "Mac"]
    assert macs
    # Both boot volumes of a real Mac: the sealed system volume reports encrypted "No" (normal).
    assert all({v["name"]: v["encrypted"] for v in row["volumes"]}.get("Macintosh HD") is False
               and "Macintosh HD - Data" in {v["name"] for v in row["volumes"]} for row in macs)
    assert all(row["recovery_information"]["password_escrowed"] is not None for row in macs)
    assert any(row["mdm"]["mdm_enabled_user"] for row in macs)
    assert any(row["apple_business_manager"] for row in macs)
    assert all(row["security_information"]["remote_desktop_enabled"] is not None for row in macs
               if row["security_information"])
    assert any(row["general"]["supplemental_build_version"] for row in details
               if platform[row["device_id"]] == "Windows")
    lost = [row["lost_mode"] for row in details if row["lost_mode"] and row["lost_mode"]["lost_mode_status"]]
    assert len(lost) >= 4 and all(isinstance(x["last_location"]["latitude"], float) for x in lost)
    phones = [row for row in details if platform[row["device_id"]] in ("iPhone", "iPad")]
    assert phones and all(isinstance(row["cellular"]["cellular_technology"], int) for row in phones)
    assert apps and all(row["app_name"] and row["creation_date"] for row in apps)


def assert_prism_rows_are_the_served_ones(fleet: Fleet, prism_apps: list[dict]) -> None:
    """Prism gives the per-device rows, column for column (the columns Prism has)."""
    served = [row for device_id in sorted(fleet.device_ids())
              for row in app_rows(fleet.apps(device_id), "S", device_id, "T")]

    def shared(rows):
        return [{k: v for k, v in row.items() if k not in ("snapshot_id", "fetched_at", *PER_DEVICE_ONLY)}
                for row in rows]

    assert served and shared(prism_apps) == shared(served)
