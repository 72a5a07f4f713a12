"""Where the collector may send the token, and the token itself.

The URL is validated before any request so that a typo can never send the
tenant's token to another host. Error messages show the expected form and
never echo the token.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import quote

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

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
    """A validated Kandji API origin. Request URLs are built from these parts only (`url`), never
    from the text the URL was given as, so the host the HTTP stack connects to is the one validated."""

    scheme: str  # https (http only for the local simulator)
    hostname: str  # lower case, letters, digits, dots and hyphens only
    port: int | None = None  # None: the scheme's default

    @property
    def host(self) -> str:
        """`acme.api.kandji.io`, or `127.0.0.1:8080` for the local simulator: for messages and the manifest."""
        return self.hostname if self.port is None else f"{self.hostname}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def api_root(self) -> str:
        return f"{self.origin}/api/v1/"

    def url(self, path: str) -> str:
        """`api_root` + a relative path such as `devices` or `devices/<id>/details` (ids through `path_segment`)."""
        if not _RELATIVE_PATH.fullmatch(path):
            raise ValueError(f"not a relative API path: {path!r}")
        return self.api_root + path


def path_segment(value: object) -> str:
    """An id as one path segment: percent-quoted, so it can never add a path, query or host."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class KandjiCredentials:
    endpoint: ApiEndpoint
    token: str = field(repr=False)  # never printed, not even by a debugger's repr


# Letters, digits and `. - : /` are all an API URL needs. Anything else (a backslash, `@`, `%`, `[`,
# whitespace, invisible or non-ASCII characters) is read differently by different URL parsers:
# `https://evil.example\.api.kandji.io` ends in `.api.kandji.io` as text, yet urllib3 connects to
# evil.example. So such characters are refused, not interpreted.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9.:/-]")
_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_API_PATHS = ("", "/", "/api/v1", "/api/v1/")
_RELATIVE_PATH = re.compile(r"[A-Za-z0-9._~%-]+(?:/[A-Za-z0-9._~%-]+)*")


def validate_api_url(url: str, *, allow_insecure_localhost: bool = False) -> ApiEndpoint:
    """Accept `https://<tenant>.api.kandji.io` in its root and `/api/v1/` forms only.

    The URL is parsed once, with urllib3's parser (the one requests connects with), and the
    endpoint is built from that parse; characters parsers disagree on are refused before it.
    """
    url = (url or "").strip()  # surrounding whitespace is unambiguous copy-paste residue
    if not url:
        raise ConfigurationError(f"The Kandji API URL is empty. Set it to {EXPECTED_FORM}.")
    if "@" in url:  # before any message that would show the URL: what precedes `@` may be a password
        raise ConfigurationError(
            "The Kandji API URL contains '@', i.e. a user name or password before the host (not shown here). "
            f"Remove it: the API takes only the token, stored in the secret's api_token. Expected {EXPECTED_FORM}.")
    bad = next(((index, char) for index, char in enumerate(url) if not _URL_CHARACTERS.fullmatch(char)), None)
    if bad is not None:
        raise ConfigurationError(
            f"The Kandji API URL contains {_describe(bad[1])} at position {bad[0] + 1}: an API URL holds only "
            "letters, digits and '.', '-', ':', '/', and other characters are read differently by different "
            f"URL parsers. Type the URL again rather than pasting it. Expected {EXPECTED_FORM}.")
    try:
        parsed = parse_url(url)
        port = parsed.port
    except (LocationParseError, ValueError):
        raise ConfigurationError(f"The Kandji API URL {url!r} cannot be parsed (is the port a number?). "
                                 f"Expected {EXPECTED_FORM}.") from None
    scheme = (parsed.scheme or "").lower()
    host = (parsed.host or "").lower()
    if not url.lower().startswith(f"{scheme}://") or scheme not in ("http", "https"):
        raise ConfigurationError(f"The Kandji API URL {url!r} must start with https://. Expected {EXPECTED_FORM}.")
    after_scheme = url[len(scheme) + 3:]
    raw_path = after_scheme[after_scheme.find("/"):] if "/" in after_scheme else ""
    if raw_path not in _API_PATHS or (parsed.path or "") not in _API_PATHS:
        raise ConfigurationError(
            f"The Kandji API URL {url!r} has the path {raw_path!r}; only the root or /api/v1/ is "
            f"accepted. Expected {EXPECTED_FORM}.")
    if not _HOSTNAME.match(host) or parsed.auth or parsed.query is not None or parsed.fragment is not None:
        raise ConfigurationError(f"The Kandji API URL {url!r} does not name a host. Expected {EXPECTED_FORM}.")
    if scheme == "http" and allow_insecure_localhost and host in LOCAL_HOSTS and port:
        return ApiEndpoint(scheme="http", hostname=host, port=port)
    if scheme != "https":
        raise ConfigurationError(f"The Kandji API URL {url!r} must use https://. Expected {EXPECTED_FORM}.")
    tenant_hosts = [suffix for suffix in KANDJI_HOST_SUFFIXES if host.endswith(suffix)]
    if not tenant_hosts or host == tenant_hosts[0][1:] or port not in (None, 443):
        raise ConfigurationError(
            f"The Kandji API URL {url!r} is not a Kandji tenant API host. Expected {EXPECTED_FORM}: "
            "copy it from Kandji > Settings > Access > API URL."
        )
    return ApiEndpoint(scheme="https", hostname=host)


def _describe(char: str) -> str:
    """A character named so a person can find it, even when it is invisible."""
    names = {"\\": "a backslash", "%": "a percent sign", "?": "a query ('?')", "#": "a fragment ('#')",
             "[": "a bracket", "]": "a bracket"}
    if char in names:
        return names[char]
    if char.isspace():
        return f"whitespace (U+{ord(char):04X})"
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
        return f"an invisible character (U+{ord(char):04X})"
    if not char.isascii():
        return f"the non-ASCII character {char!r} (U+{ord(char):04X}, perhaps a lookalike of a Latin letter)"
    return f"the character {char!r}"


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
