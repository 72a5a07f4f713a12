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
    ".clients.us-1.kandji.io",  # legacy tenants, from before the 2023 URL scheme: US
    ".clients.eu.kandji.io",  # and their EU twin
)
LOCAL_HOSTS = ("127.0.0.1", "localhost")
EXPECTED_FORM = (
    "https://<tenant>.api.kandji.io (or .api.eu.kandji.io, .api.iru.com, .api.eu.iru.com, "
    "legacy .clients.us-1.kandji.io, .clients.eu.kandji.io), with or without /api/v1/"
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


# Copy-paste residue around a token, removed because a token never starts or ends with it: whitespace and
# line breaks, invisible format characters (BOM U+FEFF, zero-width space U+200B, ...), quotes on both
# ends (straight or curly), and an `Authorization` header's `Bearer ` prefix.
_QUOTES = frozenset("\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e\u201a")
_BEARER = re.compile(r"^bearer\s+", re.IGNORECASE)
TOKEN_FIX = "Copy the token again from Kandji (Settings > Access > API Token) and store it as one line"


def strip_invisible_edges(text: str) -> str:
    """`text` without surrounding whitespace and invisible format characters (a BOM, zero-width spaces)."""
    start, end = 0, len(text)
    while start < end and _is_blank(text[start]):
        start += 1
    while end > start and _is_blank(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_blank(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp")


def validate_token(raw: object, where: str = "in the Kandji secret") -> str:
    """The API token as it must go into `Authorization: Bearer <token>`, or an error saying what is wrong.

    Unambiguous residue is removed (see above); anything else a token cannot hold is refused with
    its kind and position, never the token or any part of it. Used for every source: the secret
    (Lambda and `--secret-id`), `--token-file`, KANDJI_API_TOKEN and the prompt.
    """
    token = strip_invisible_edges(str(raw or ""))
    for _ in range(2):  # `"Bearer abc"` and `Bearer "abc"` alike
        token = strip_invisible_edges(_BEARER.sub("", token, count=1))
        if len(token) >= 2 and token[0] in _QUOTES and token[-1] in _QUOTES:
            token = strip_invisible_edges(token[1:-1])
    if not token:
        raise ConfigurationError(f"The Kandji API token {where} is empty. {TOKEN_FIX}.")
    for index, char in enumerate(token):
        if "\x21" <= char <= "\x7e" and char not in _QUOTES:
            continue
        if char in _QUOTES:
            what = f"a quote character (U+{ord(char):04X})"
        elif char.isspace():
            what = f"whitespace or a line break (U+{ord(char):04X})"
        elif unicodedata.category(char) in ("Cc", "Cf"):
            what = f"an invisible character (U+{ord(char):04X})"
        else:
            what = f"a non-ASCII character (U+{ord(char):04X})"
        raise ConfigurationError(
            f"The Kandji API token {where} contains {what} at character {index + 1}: a token holds only "
            f"letters, digits and ASCII punctuation, so it was damaged when it was copied. {TOKEN_FIX}, "
            "without quotes or other characters around or inside it.")
    return token


def parse_secret(secret_value: str, *, fallback_url: str | None, allow_insecure_localhost: bool = False,
                 token_source: str = "in the Kandji secret") -> KandjiCredentials:
    """The secret holds JSON `{"api_url", "api_token"}` or the bare token (URL from the environment)."""
    text = strip_invisible_edges(secret_value or "")  # a BOM before the JSON is no reason to misread it
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
        token = strip_invisible_edges(str(document.get("api_token") or ""))
        url = str(document.get("api_url") or "").strip() or fallback_url
        if not token:
            raise ConfigurationError("The Kandji secret's JSON has no api_token. Add the API token under "
                                     "the key \"api_token\".")
    if not url:
        raise ConfigurationError(
            "No Kandji API URL: put \"api_url\" in the secret's JSON or set KANDJI_API_URL "
            f"(template parameter KandjiApiUrl). Expected {EXPECTED_FORM}."
        )
    token = validate_token(token, where=token_source)
    try:
        endpoint = validate_api_url(url, allow_insecure_localhost=allow_insecure_localhost)
    except ConfigurationError as error:
        # Someone may have pasted the token into the URL field: never echo it back.
        raise ConfigurationError(str(error).replace(token, "<redacted>")) from None
    return KandjiCredentials(endpoint=endpoint, token=token)
