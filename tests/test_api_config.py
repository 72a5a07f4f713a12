import json

import pytest

from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.config import parse_secret, validate_api_url


@pytest.mark.parametrize("url, root", [
    ("https://acme.api.kandji.io", "https://acme.api.kandji.io/api/v1/"),
    ("https://acme.api.kandji.io/", "https://acme.api.kandji.io/api/v1/"),
    ("https://acme.api.kandji.io/api/v1", "https://acme.api.kandji.io/api/v1/"),
    ("https://acme.api.kandji.io/api/v1/", "https://acme.api.kandji.io/api/v1/"),
    ("  https://ACME.api.eu.kandji.io  ", "https://acme.api.eu.kandji.io/api/v1/"),
    ("https://acme.api.iru.com", "https://acme.api.iru.com/api/v1/"),
    ("https://acme.api.eu.iru.com/api/v1/", "https://acme.api.eu.iru.com/api/v1/"),
    ("https://acme.clients.us-1.kandji.io", "https://acme.clients.us-1.kandji.io/api/v1/"),
    ("https://acme.clients.eu.kandji.io/api/v1/", "https://acme.clients.eu.kandji.io/api/v1/"),  # its EU twin
])
def test_accepted_url_forms(url, root):
    assert validate_api_url(url).api_root == root


@pytest.mark.parametrize("url", [
    "http://acme.api.kandji.io",  # plain http would expose the token
    "https://acme.kandji.io",  # the web console, not the API
    "https://api.kandji.io",  # no tenant
    "https://acme.api.kandji.io.evil.example",
    "https://evil.example/acme.api.kandji.io",
    "https://acme.api.kandji.io/api/v2/",
    "https://acme.api.kandji.io/api/v1/devices",
    "https://user:pw@acme.api.kandji.io",
    "https://acme.api.kandji.io:8443",
    "acme.api.kandji.io",
    "http://127.0.0.1:8080",  # only with the explicit local flag
    "",
])
def test_rejected_urls_explain_the_expected_form(url):
    with pytest.raises(ConfigurationError, match="api.kandji.io"):
        validate_api_url(url)


def test_localhost_needs_the_explicit_flag_and_a_port():
    assert validate_api_url("http://127.0.0.1:8080/api/v1/", allow_insecure_localhost=True).host == "127.0.0.1:8080"
    assert validate_api_url("http://localhost:9", allow_insecure_localhost=True).api_root == "http://localhost:9/api/v1/"
    with pytest.raises(ConfigurationError):
        validate_api_url("http://10.0.0.1:8080", allow_insecure_localhost=True)
    with pytest.raises(ConfigurationError):
        validate_api_url("http://127.0.0.1", allow_insecure_localhost=True)


def test_secret_as_json_with_whitespace():
    creds = parse_secret(' {"api_url": " https://acme.api.kandji.io/api/v1/ ", "api_token": "  tok-123\\n"} \n',
                         fallback_url=None)
    assert creds.token == "tok-123" and creds.endpoint.host == "acme.api.kandji.io"
    assert "tok-123" not in repr(creds)


def test_bare_token_takes_the_url_from_the_environment():
    creds = parse_secret("  tok-123 \n", fallback_url="https://acme.api.iru.com")
    assert creds.token == "tok-123" and creds.endpoint.host == "acme.api.iru.com"


@pytest.mark.parametrize("secret, message", [
    ("", "secret is empty"),
    ("tok-123", "No Kandji API URL"),
    ('{"api_url": "https://acme.api.kandji.io"}', "no api_token"),
    ('{"api_url": ', "not valid JSON"),
])
def test_bad_secrets_say_what_to_fix(secret, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_secret(secret, fallback_url=None)


def test_token_pasted_into_the_url_is_not_echoed():
    with pytest.raises(ConfigurationError) as error:
        parse_secret('{"api_url": "supersecret-token", "api_token": "supersecret-token"}', fallback_url=None)
    assert "supersecret-token" not in str(error.value)


# Forms URL parsers disagree on: each is refused, and the message names the character to remove.
@pytest.mark.parametrize("url, named", [
    ("https://evil.example\\.api.kandji.io", "a backslash at position 21"),
    ("https://evil.example:443\\.api.kandji.io", "a backslash"),
    ("https:\\\\evil.example\\.api.kandji.io", "a backslash"),
    ("https://evil.example .api.kandji.io", "whitespace (U+0020)"),
    ("https://evil.example\t.api.kandji.io", "whitespace (U+0009)"),
    ("https://acme.api.kandji.io\n.evil.example", "whitespace (U+000A)"),
    ("https://evil.example\x00.api.kandji.io", "an invisible character (U+0000)"),
    ("https://evil.example\u200b.api.kandji.io", "an invisible character (U+200B)"),
    ("\ufeffhttps://acme.api.kandji.io", "an invisible character (U+FEFF) at position 1"),
    ("https://evil.example%5c.api.kandji.io", "a percent sign"),
    ("https://evil.example%2f.api.kandji.io", "a percent sign"),
    ("https://acme.api.kandji.io%2eevil.example", "a percent sign"),
    ("https://evil.example#.api.kandji.io", "a fragment"),
    ("https://evil.example?.api.kandji.io", "a query"),
    ("https://[::1].api.kandji.io", "a bracket"),
    ("https://evil.example;.api.kandji.io", "the character ';'"),
    ("https://evil.example\u3002api.kandji.io", "non-ASCII character"),  # ideographic full stop
    ("https://acme.api.kandj\u0456.io", "non-ASCII character"),  # Cyrillic i
])
def test_characters_parsers_disagree_on_are_refused_by_name(url, named):
    with pytest.raises(ConfigurationError) as refused:
        validate_api_url(url)
    assert named in str(refused.value) and "api.kandji.io" in str(refused.value)


@pytest.mark.parametrize("url", [
    "https:evil.example.api.kandji.io",  # no `//`: parsers guess differently
    "https:/evil.example/.api.kandji.io",
    "https://acme.api.kandji.io:443:80",
    "https://acme.api.kandji.io:99999",
    "https://acme..api.kandji.io",
    "https://-acme.api.kandji.io",
    "https://acme.api.kandji.io.",
    "https://acme.api.kandji.io//api/v1",
    "https://acme.api.kandji.io/api/v1/../v1",
    "ftp://acme.api.kandji.io",
])
def test_other_odd_forms_are_refused(url):
    with pytest.raises(ConfigurationError, match="api.kandji.io"):
        validate_api_url(url)


def test_the_endpoint_is_built_from_the_parse_not_the_text():
    endpoint = validate_api_url(" HTTPS://Acme.API.Kandji.io:443/api/v1 ")
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("https", "acme.api.kandji.io", None)
    assert endpoint.url("devices") == "https://acme.api.kandji.io/api/v1/devices"


@pytest.mark.parametrize("url", [
    "https://alice:s3cr3t-pw@acme.api.kandji.io/api/v2/",  # wrong path
    "https://alice:s3cr3t-pw@acme.api.kandji.io:8443",  # wrong port
    "http://alice:s3cr3t-pw@acme.api.kandji.io",  # wrong scheme
    "https://alice:s3cr3t-pw@evil.example",  # wrong host
    "https://alice:s3cr3t-pw@acme.api.kandji.io\\x",
    "https://s3cr3t-pw@acme.api.kandji.io",
])
def test_a_user_name_or_password_in_the_url_is_refused_first_and_never_echoed(url):
    with pytest.raises(ConfigurationError) as refused:
        validate_api_url(url)
    message = str(refused.value)
    assert "user name or password" in message
    assert "alice" not in message and "s3cr3t" not in message
    with pytest.raises(ConfigurationError) as refused:
        parse_secret(json.dumps({"api_url": url, "api_token": "tok-123"}), fallback_url=None)
    assert "alice" not in str(refused.value) and "s3cr3t" not in str(refused.value)
