"""The simulator's test hook: raw values in served payloads, set-like lists served in another order."""

from __future__ import annotations

import json

import requests

from simulator import Fleet, KandjiSimulator

TOKEN = "raw-values-token"


def get(sim: KandjiSimulator, path: str) -> requests.Response:
    return requests.get(sim.api_url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def test_a_lone_surrogate_is_served_as_its_json_escape_and_clear_restores_the_fleet():
    with KandjiSimulator(Fleet.generate(3, seed=2), token=TOKEN) as sim:
        device_id = sim.fleet.device_ids()[1]
        sim.raw_values.set(device_id, "details", "general.device_name", "x\ud83d")
        sim.raw_values.set(device_id, "apps", "0.version", "0001-01-01T00:00:00+01:00")
        sim.raw_values.set(device_id, "list_item", "user.email", "\udfff")
        assert b'"device_name": "x\\ud83d"' in get(sim, f"devices/{device_id}/details").content
        assert get(sim, f"devices/{device_id}/apps").json()["apps"][0]["version"] == "0001-01-01T00:00:00+01:00"
        [item] = [item for item in get(sim, "devices").json() if item["device_id"] == device_id]
        assert item["user"]["email"] == "\udfff"
        assert sim.fleet.details(device_id)["general"]["device_name"] != "x\ud83d"  # the fleet itself is untouched
        sim.raw_values.clear()
        assert get(sim, f"devices/{device_id}/details").json() == json.loads(json.dumps(sim.fleet.details(device_id)))


def test_reordered_lists_hold_the_same_items_in_another_order():
    with KandjiSimulator(Fleet.generate(6, seed=3), token=TOKEN) as sim:
        device_id = next(d for d in sim.fleet.device_ids() if len(sim.fleet.details(d)["installed_profiles"]) > 1)
        before = get(sim, f"devices/{device_id}/details").json()
        sim.raw_values.reorder_lists(seed=1)
        after = get(sim, f"devices/{device_id}/details").json()
        assert after["installed_profiles"] != before["installed_profiles"]
        assert (sorted(map(json.dumps, after["installed_profiles"]))
                == sorted(map(json.dumps, before["installed_profiles"])))
        sim.raw_values.reorder_lists(None)
        assert get(sim, f"devices/{device_id}/details").json() == before
