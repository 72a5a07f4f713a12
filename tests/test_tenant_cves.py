"""Critical CVE alerts when the KEV list could not be read: unknown is not false.

A CVE is critical by its CVSS score (the detections say it) or by being on CISA's KEV list (the
vulnerabilities table says it). A run whose token may not read the vulnerabilities alerts on scores only and
says KEV is unknown; a KEV CVE it could not judge is alerted by the next run that reads both, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenant_fakes import Tenant, detection

from kandji_snapshots.diff.tenant_changes import CRITICAL_CVE_DETECTED, TenantChanges


def cve_alerts(tenant: Tenant, previous, current) -> dict[str, Any]:
    return {event["cve"]["cve_id"]: event["cve"]["kev"] for event in TenantChanges(tenant.store, previous, current)
            if event["change_type"] == CRITICAL_CVE_DETECTED}


def test_a_kev_cve_seen_while_the_kev_list_was_unreadable_is_alerted_when_it_is_read(tmp_path: Path):
    tenant = Tenant(tmp_path)
    api = tenant.api
    baseline = tenant.collect()  # both read, nothing detected

    api.forbidden = {"vulnerabilities"}
    api.rows["detections"] = [detection("d1", "CVE-2024-9999", 9.8), detection("d1", "CVE-2024-5555", 6.1)]
    api.rows["vulnerabilities"] = [{"cve_id": "CVE-2024-5555", "cvss_score": 6.1, "kev_score": 1},
                                   {"cve_id": "CVE-2024-9999", "cvss_score": 9.8, "kev_score": 0}]
    unjudged = tenant.collect()
    assert cve_alerts(tenant, baseline, unjudged) == {"CVE-2024-9999": None}  # by score; KEV unknown

    api.forbidden = set()
    judged = tenant.collect()
    assert cve_alerts(tenant, unjudged, judged) == {"CVE-2024-5555": True}  # hidden by the unknown, now told

    again = tenant.collect()
    assert cve_alerts(tenant, judged, again) == {}


def test_a_kev_cve_first_seen_with_both_read_is_alerted_at_once_and_once(tmp_path: Path):
    tenant = Tenant(tmp_path)
    api = tenant.api
    baseline = tenant.collect()
    api.rows["detections"] = [detection("d1", "CVE-2024-5555", 6.1), detection("d1", "CVE-2024-4444", 6.1)]
    api.rows["vulnerabilities"] = [{"cve_id": "CVE-2024-5555", "cvss_score": 6.1, "kev_score": 1},
                                   {"cve_id": "CVE-2024-4444", "cvss_score": 6.1, "kev_score": 0}]
    first = tenant.collect()
    assert cve_alerts(tenant, baseline, first) == {"CVE-2024-5555": True}
    api.forbidden = {"vulnerabilities"}
    second = tenant.collect()
    assert cve_alerts(tenant, first, second) == {}
    api.forbidden = set()
    third = tenant.collect()
    assert cve_alerts(tenant, second, third) == {}  # judged by the first run already


def test_a_kev_list_read_for_the_first_time_alerts_on_new_detections_not_on_history(tmp_path: Path):
    tenant = Tenant(tmp_path)
    api = tenant.api
    api.forbidden = {"vulnerabilities"}
    api.rows["detections"] = [detection("d1", "CVE-2024-5555", 6.1)]
    api.rows["vulnerabilities"] = [{"cve_id": "CVE-2024-5555", "cvss_score": 6.1, "kev_score": 1},
                                   {"cve_id": "CVE-2024-7777", "cvss_score": 6.1, "kev_score": 1}]
    before = tenant.collect()  # the token may not read the KEV list yet

    api.forbidden = set()
    api.rows["detections"].append(detection("d2", "CVE-2024-7777", 6.1))
    first_kev_read = tenant.collect()
    assert cve_alerts(tenant, before, first_kev_read) == {"CVE-2024-7777": True}  # 5555 is history
