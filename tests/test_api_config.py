import pytest

from kandji_snapshots.kandji.config import parse_secret, validate_api_url
from kandji_snapshots.errors import ConfigurationError


@pytest.mark.parametrize("url, root", [
    ("https://acme.api.kandji.io", "https://acme.api.kandji.io/api/v1/"),
    ("https://acme.api.kandji.io/", "https://acme.api.kandji.io/api/v1/"),
    ("https://acme.api.kandji.io/api/v1", "https://acme.api.kandji.io/api/v1/"),
    ("https://acme.api.kandji.io/api/v1/", "https://acme.api.kandji.io/api/v1/"),
    ("  https://ACME.api.eu.kandji.io  ", "https://acme.api.eu.kandji.io/api/v1/"),
    ("https://acme.api.iru.com", "https://acme.api.iru.com/api/v1/"),
    ("https://acme.api.eu.iru.com/api/v1/", "https://acme.api.eu.iru.com/api/v1/"),
    ("https://acme.clients.us-1.kandji.io", "https://acme.clients.us-1.kandji.io/api/v1/"),
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
