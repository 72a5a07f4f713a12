"""What each Kandji API endpoint needs on the token, in the words of Kandji's API token settings.

Plain data: the client names a missing permission in its errors, the collector records the posture
categories a token may not read, and `check` lists what to add.
"""

from __future__ import annotations

PERMISSIONS = {
    "devices": "GET /devices (Device list)",
    "details": "GET /devices/{device_id}/details (Device details)",
    "apps": "GET /devices/{device_id}/apps (Device apps)",
    "prism": "GET /prism/apps (Prism: apps)",
    # Tenant-wide sources (collect/tenant_sources.py), each optional.
    "audit_events": "GET /audit/events (Audit log)",
    "threats": "GET /threat-details (Threats)",
    "detections": "GET /vulnerability-management/detections (Vulnerability detections)",
    "vulnerabilities": "GET /vulnerability-management/vulnerabilities (Vulnerabilities)",
    "users": "GET /users (Users)",
    "blueprints": "GET /blueprints (Blueprints)",
}


def prism_permission(category: str) -> str:
    """The permission a Prism posture category needs (`GET /prism/<category>`)."""
    return f"GET /prism/{category} (Prism: {category.replace('_', ' ')})"


def permission_for(endpoint: str) -> str:
    """The permission an endpoint (a key of PERMISSIONS, or `prism_<category>`) needs."""
    if endpoint in PERMISSIONS:
        return PERMISSIONS[endpoint]
    if endpoint.startswith("prism_"):  # a posture category: GET /prism/<category>
        return prism_permission(endpoint.removeprefix("prism_"))
    return endpoint
