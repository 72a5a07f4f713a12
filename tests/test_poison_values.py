"""Values no row can hold, served by the simulator to one device, never stop the fleet's snapshot.

A lone UTF-16 surrogate (half an emoji: the JSON text "\\ud83d") cannot be written as UTF-8; a
timestamp pushed out of range by its offset (`0001-01-01T00:00:00+01:00` is in year 0 in UTC) cannot be
parsed into an instant. Each is normalised (U+FFFD; null with the raw text kept in `extra` under the
field's path), the device and field are logged, and every device is committed. Years before 1000 keep
four digits. Runs through the collector and differ handlers, the simulator over HTTP and moto.
"""

from __future__ import annotations

import json
import logging

import boto3
from aws_helpers import BUCKET, read_rows
from handler_pipeline import TOKEN, assert_complete, the_manifest
from schema_guard import SchemaGuard
from template_model import TEMPLATE_PATH

from simulator import Fleet

HALF_EMOJI = "\ud83d"  # served as the JSON text "\ud83d", as a truncated emoji is


def rows_of(manifest: dict, table: str, device_id: str) -> list[dict]:
    return [row for row in read_rows(manifest["tables"][table]["keys"]) if row["device_id"] == device_id]


def poison(sim, device_id: str) -> None:
    values = sim.raw_values
    values.set(device_id, "list_item", "device_name", f"Ada{HALF_EMOJI}")
    values.set(device_id, "list_item", "last_check_in", "9999-12-31 23:59:59 -0500")
    values.set(device_id, "list_item", "first_enrollment", "0001-01-01T00:00:00Z")  # representable: year 1
    values.set(device_id, "list_item", "tags", ["ok", f"half{HALF_EMOJI}"])
    values.set(device_id, "details", "general.device_name", f"Ada{HALF_EMOJI}")
    values.set(device_id, "details", "mdm.last_check_in", "0001-01-01T00:00:00+01:00")
    values.set(device_id, "details", "brand_new_section", {f"key{HALF_EMOJI}": f"value{HALF_EMOJI}"})
    values.set(device_id, "details", "installed_profiles", [{"name": f"Wi-Fi{HALF_EMOJI}", "uuid": "P1"}])
    values.set(device_id, "apps", "0.app_name", "\udc00Notes")
    values.set(device_id, "apps", "0.creation_date", "9999-12-31 23:59:59 -0500")


def test_poison_values_are_normalised_logged_and_every_device_committed(pipeline, caplog):
    caplog.set_level(logging.INFO, logger="kandji_snapshots")
    run = pipeline(Fleet.generate(12, seed=41))
    device_id = run.fleet.device_ids()[5]
    poison(run.sim, device_id)

    manifest = the_manifest(run.collect())
    assert_complete(manifest, run.fleet)

    [device] = rows_of(manifest, "devices", device_id)
    assert device["device_name"] == "Ada\ufffd" and sorted(device["tags"]) == ["half\ufffd", "ok"]
    assert device["last_check_in"] is None and device["first_enrollment"] == "0001-01-01T00:00:00.000000Z"
    assert json.loads(device["extra"]) == {"last_check_in": "9999-12-31 23:59:59 -0500"}  # the raw text, kept
    [details] = rows_of(manifest, "device_details", device_id)
    assert details["general"]["device_name"] == "Ada\ufffd" and details["mdm"]["last_check_in"] is None
    extra = json.loads(details["extra"])
    assert extra["mdm.last_check_in"] == "0001-01-01T00:00:00+01:00"
    assert extra["brand_new_section"] == {"key\ufffd": "value\ufffd"}
    assert json.loads(details["installed_profiles"]) == [{"name": "Wi-Fi\ufffd", "uuid": "P1"}]
    apps = rows_of(manifest, "device_apps", device_id)
    assert "\ufffdNotes" in [app["app_name"] for app in apps]
    [notes] = [app for app in apps if app["app_name"] == "\ufffdNotes"]
    assert notes["creation_date"] is None and json.loads(notes["extra"])["creation_date"].startswith("9999-12-31")

    # The log names the device and the fields, never the token.
    assert TOKEN not in caplog.text
    surrogates = [record for record in caplog.records if "surrogate" in record.getMessage()]
    timestamps = [record for record in caplog.records if "timestamp out of range" in record.getMessage()]
    assert {record.device_id for record in surrogates + timestamps} == {device_id}
    surrogate_fields = {field for record in surrogates for field in record.fields}
    assert {"device_name", "tags[0]", "general.device_name", "extra.brand_new_section.key\ufffd",
            "installed_profiles[0].name", "app_name"} <= surrogate_fields
    assert sorted(field for record in timestamps for field in record.fields) == [
        "creation_date", "last_check_in", "mdm.last_check_in"]

    # What Athena reads: every file passes the schema guard (ISO timestamps with four-digit years, UTF-8).
    guard = SchemaGuard.from_template(TEMPLATE_PATH)
    for table in ("devices", "device_details", "device_apps"):
        for key in manifest["tables"][table]["keys"]:
            body = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert guard.check_data_file(table, body, key)[1] == []

    # The same values again next run: nothing changed, nothing published for that device.
    run.diff(manifest["snapshot_id"])
    second = run.collect()["snapshot_id"]
    assert run.diff(second)["events"] == 0
    assert [m for m in run.published_once() if m.get("device_id") == device_id] == []
