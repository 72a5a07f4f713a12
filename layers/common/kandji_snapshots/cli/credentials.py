"""Where the API token and URL come from: --secret-id (Secrets Manager, like the Lambda), --token-file,
the environment, or a hidden prompt, in that order. Every token found is handed to the console to redact,
and a wrong URL gets a "did you mean" before any request is sent."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from kandji_snapshots.cli.console import Console, UsageError
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.config import (
    EXPECTED_FORM,
    LOCAL_HOSTS,
    KandjiCredentials,
    parse_secret,
    strip_invisible_edges,
    validate_api_url,
)
from kandji_snapshots.settings import API_URL_ENV, INSECURE_LOCALHOST_ENV, flag_setting

TOKEN_ENV = "KANDJI_API_TOKEN"


def read_secret(secret_id: str) -> str:
    """The secret's value, read with boto3 (AWS_PROFILE / AWS_REGION / AWS_ENDPOINT_URL apply)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as error:
        raise ConfigurationError(
            f"Could not read the Kandji secret {secret_id}: {error}. Check that it exists, has a value "
            "(aws secretsmanager put-secret-value) and that your AWS credentials (AWS_PROFILE, AWS_REGION) "
            "may read it.") from None
    value = response.get("SecretString")
    if value is None:
        value = (response.get("SecretBinary") or b"").decode("utf-8", errors="replace")
    return value


def _read_token_file(path: str, console: Console) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = os.stat(path).st_mode
    except OSError as error:
        raise ConfigurationError(f"Cannot read the token file {path}: {error.strerror or error}.") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        console.err(f"warning: the token file {path} is readable by other users; chmod 600 {path}")
    return text


def resolve_credentials(args: argparse.Namespace, console: Console,
                        environ: Mapping[str, str]) -> tuple[KandjiCredentials, str]:
    """(credentials, where the token came from). The URL is validated before any request."""
    allow_insecure = args.allow_insecure_localhost or flag_setting(environ, INSECURE_LOCALHOST_ENV)
    url = (args.url or environ.get(API_URL_ENV) or "").strip() or None
    if args.secret_id and args.token_file:
        raise UsageError("Give either --secret-id or --token-file, not both.")
    if args.secret_id:
        secret = read_secret(args.secret_id)
        _hide_secret_value(secret, console)
        try:
            credentials = parse_secret(secret, fallback_url=url, allow_insecure_localhost=allow_insecure)
        except ConfigurationError as error:
            if url is None and str(error).startswith("No Kandji API URL"):
                raise ConfigurationError(f"{error} Or give --url.") from None
            raise
        console.hide(credentials.token)
        if args.url and _endpoint_or_none(args.url, allow_insecure) not in (None, credentials.endpoint):
            console.err(f"note: the secret names the API URL {credentials.endpoint.api_root}, which the "
                        "collector uses; --url only applies when the secret holds a bare token.")
        return credentials, f"secret {args.secret_id}"

    if args.token_file:
        text, source = _read_token_file(args.token_file, console), f"file {args.token_file}"
    elif (environ.get(TOKEN_ENV) or "").strip():
        text, source = environ[TOKEN_ENV], TOKEN_ENV
    elif sys.stdin is not None and sys.stdin.isatty():
        if not url:
            raise UsageError(_no_url_message())
        try:  # before asking for a token
            validate_api_url(url, allow_insecure_localhost=allow_insecure)
        except ConfigurationError as error:
            raise ConfigurationError(_with_url_hint(str(error), url)) from None
        text, source = getpass.getpass("Kandji API token (input hidden): "), "prompt"
    else:
        raise UsageError(f"No API token: use --token-file FILE, --secret-id ARN, the environment variable "
                         f"{TOKEN_ENV}, or run in a terminal to be prompted. The token is never taken on the "
                         "command line.")
    console.hide(text.strip())
    text = strip_invisible_edges(text)  # a BOM (Notepad) or a trailing newline is not part of the token
    console.hide(text)
    if not text:
        raise ConfigurationError(f"The API token from {source} is empty.")
    if not url and not text.startswith("{"):
        raise UsageError(_no_url_message())
    try:
        credentials = parse_secret(text, fallback_url=url, allow_insecure_localhost=allow_insecure,
                                   token_source=f"from {source}")
    except ConfigurationError as error:
        # parse_secret speaks of the Lambda's secret; here the text came from a file, the environment or the prompt.
        message = str(error).replace("The Kandji secret", f"The token from {source}")
        raise ConfigurationError(_with_url_hint(message, url)) from None
    console.hide(credentials.token)
    return credentials, source


def _hide_secret_value(secret: str, console: Console) -> None:
    text = (secret or "").strip()
    if text.startswith("{"):
        try:
            token = json.loads(text).get("api_token")
        except (ValueError, AttributeError):
            token = None
        if isinstance(token, str):
            console.hide(token.strip())
    else:
        console.hide(text)


def _endpoint_or_none(url: str, allow_insecure: bool):
    try:
        return validate_api_url(url, allow_insecure_localhost=allow_insecure)
    except ConfigurationError:
        return None


def _no_url_message() -> str:
    return f"No API URL: give --url or set {API_URL_ENV}. Expected {EXPECTED_FORM}."


_CONSOLE_HOST = re.compile(r"^(?P<tenant>[a-z0-9][a-z0-9-]*)\.(?P<region>eu\.)?(?P<domain>kandji\.io|iru\.com)$")
_REGION_SWAP = ((".api.eu.kandji.io", ".api.kandji.io"), (".api.eu.iru.com", ".api.iru.com"),
                (".clients.eu.kandji.io", ".clients.us-1.kandji.io"))


def _with_url_hint(message: str, url: str | None) -> str:
    """Adds "did you mean" for the web console's URL (https://acme.kandji.io) and http://."""
    if not url:
        return message
    parts = urlsplit(url.strip())
    try:
        host = (parts.hostname or "").lower()
    except ValueError:
        return message
    match = _CONSOLE_HOST.match(host)
    if "not a Kandji tenant API host" in message and match and match.group("tenant") not in ("api", "www", "app"):
        api_host = f"{match.group('tenant')}.api.{match.group('region') or ''}{match.group('domain')}"
        return (f"{message} {parts.scheme}://{host} looks like the web console's address; the API URL is "
                f"probably https://{api_host}")
    if "must use https://" in message:
        if host in LOCAL_HOSTS:
            return f"{message} For a local simulator, add --allow-insecure-localhost."
        return f"{message} Try https://{host}"
    return message


def other_region(host: str) -> str | None:
    """The same tenant's API host in the other region (US <-> EU), for hints after a 401 or 404."""
    for eu, us in _REGION_SWAP:
        if host.endswith(eu):
            return host[: -len(eu)] + us
        if host.endswith(us):
            return host[: -len(us)] + eu
    return None
