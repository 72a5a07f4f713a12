"""Where the collector may send the token, and the token itself.

The URL is validated before any request so that a typo can never send the
tenant's token to another host. Error messages show the expected form and
never echo the token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kandji_snapshots.errors import ConfigurationError

KANDJI_HOST_SUFFIXES = (
    ".api.kandji.io",
    ".api.eu.kandji.io",
    ".api.iru.com",
    ".api.eu.iru.com",
    ".clients.us-1.kandji.io",
)
LOCAL_HOSTS = ("127.0.0.1", "localhost")
EXPECTED_FORM = (
    "https://<tenant>.api.kandji.io (or .api.eu.kandji.io, .api.iru.com, .api.eu.iru.com, "
    ".clients.us-1.kandji.io), with or without /api/v1/"
)


@dataclass(frozen=True)
class ApiEndpoint:
    """A validated Kandji API root: requests go to `api_root + "devices"` and so on."""

    api_root: str  # always ends in /api/v1/
    host: str


@dataclass(frozen=True)
class KandjiCredentials:
    endpoint: ApiEndpoint
    token: str = field(repr=False)  # never printed, not even by a debugger's repr


def validate_api_url(url: str, *, allow_insecure_localhost: bool = False) -> ApiEndpoint:
    """Accept `https://<tenant>.api.kandji.io` in its root and `/api/v1/` forms only."""
    url = (url or "").strip()
    if not url:
        raise ConfigurationError(f"The Kandji API URL is empty. Set it to {EXPECTED_FORM}.")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"The Kandji API URL {url!r} has an invalid port. Expected {EXPECTED_FORM}.") from None
    path = parts.path.rstrip("/")
    if path not in ("", "/api/v1"):
        raise ConfigurationError(
            f"The Kandji API URL {url!r} has the path {parts.path!r}; only the root or /api/v1/ is "
            f"accepted. Expected {EXPECTED_FORM}."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(f"The Kandji API URL {_safe(url)!r} must not carry a query, fragment or "
                                 f"credentials. Expected {EXPECTED_FORM}.")
    if parts.scheme == "http" and allow_insecure_localhost and host in LOCAL_HOSTS and port:
        return ApiEndpoint(api_root=f"http://{host}:{port}/api/v1/", host=f"{host}:{port}")
    if parts.scheme != "https":
        raise ConfigurationError(f"The Kandji API URL {url!r} must use https://. Expected {EXPECTED_FORM}.")
    tenant_hosts = [suffix for suffix in KANDJI_HOST_SUFFIXES if host.endswith(suffix)]
    if not tenant_hosts or host == tenant_hosts[0][1:] or port not in (None, 443):
        raise ConfigurationError(
            f"The Kandji API URL {url!r} is not a Kandji tenant API host. Expected {EXPECTED_FORM}: "
            "copy it from Kandji > Settings > Access > API URL."
        )
    return ApiEndpoint(api_root=f"https://{host}/api/v1/", host=host)


def _safe(url: str) -> str:
    """The URL without any userinfo, for error messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


def parse_secret(secret_value: str, *, fallback_url: str | None,
                 allow_insecure_localhost: bool = False) -> KandjiCredentials:
    """The secret holds JSON `{"api_url", "api_token"}` or the bare token (URL from the environment)."""
    text = (secret_value or "").strip()
    if not text:
        raise ConfigurationError(
            "The Kandji secret is empty. Store the token with: aws secretsmanager put-secret-value "
            "--secret-id <KandjiSecretArn> --secret-string "
            "'{\"api_url\":\"https://<tenant>.api.kandji.io\",\"api_token\":\"<token>\"}'"
        )
    url = fallback_url
    token = text
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise ConfigurationError(
                "The Kandji secret starts with '{' but is not valid JSON. Store "
                "{\"api_url\": \"https://<tenant>.api.kandji.io\", \"api_token\": \"<token>\"} or the bare token."
            ) from None
        if not isinstance(document, dict):
            raise ConfigurationError("The Kandji secret's JSON must be an object with api_url and api_token.")
        token = str(document.get("api_token") or "").strip()
        url = str(document.get("api_url") or "").strip() or fallback_url
        if not token:
            raise ConfigurationError("The Kandji secret's JSON has no api_token. Add the API token under "
                                     "the key \"api_token\".")
    if not url:
        raise ConfigurationError(
            "No Kandji API URL: put \"api_url\" in the secret's JSON or set KANDJI_API_URL "
            f"(template parameter KandjiApiUrl). Expected {EXPECTED_FORM}."
        )
    if any(ch.isspace() for ch in token):
        raise ConfigurationError("The Kandji API token contains whitespace; paste it again without line breaks.")
    try:
        endpoint = validate_api_url(url, allow_insecure_localhost=allow_insecure_localhost)
    except ConfigurationError as error:
        # Someone may have pasted the token into the URL field: never echo it back.
        raise ConfigurationError(str(error).replace(token, "<redacted>")) from None
    return KandjiCredentials(endpoint=endpoint, token=token)
