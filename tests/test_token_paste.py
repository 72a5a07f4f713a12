"""Copy-paste damage in the API token: unambiguous residue is removed, anything else is refused with
a message that says what is wrong and where, and never shows the token or any part of it.

One function (`kandji.config.validate_token`) serves every source: the secret the Lambda reads, and the
CLI's --secret-id, --token-file, KANDJI_API_TOKEN and prompt.
"""

from __future__ import annotations

import json

import pytest
from aws_helpers import BUCKET, create_bucket, create_secret, manifests
from conftest import FakeLambdaContext, load_handler

from kandji_snapshots.cli import main as cli
from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.config import parse_secret, validate_token
from simulator import Fleet, KandjiSimulator

TOKEN = "3f6c2a9e-1b7d-4e8a-9c0f-5d2b8a7e6c41"  # the shape of a real Kandji token

# Removed: a token never starts or ends with these.
RESIDUE = {
    "surrounding whitespace and line breaks": f"  {TOKEN}\r\n",
    "a byte-order mark (Notepad)": f"\ufeff{TOKEN}",
    "a trailing zero-width space": f"{TOKEN}\u200b",
    "a Bearer prefix": f"Bearer {TOKEN}",
    "a lower-case bearer prefix": f"bearer\t{TOKEN}",
    "straight quotes": f'"{TOKEN}"',
    "curly quotes": f"\u201c{TOKEN}\u201d",
    "single curly quotes": f"\u2018{TOKEN}\u2019",
    "a quoted Bearer header": f'"Bearer {TOKEN}"',
    "all at once": f"\ufeff Bearer \u201c{TOKEN}\u201d\u200b\n",
}

# Refused: ambiguous or damaged inside.
DAMAGE = {
    "a zero-width space inside": (f"{TOKEN[:8]}\u200b{TOKEN[8:]}", "an invisible character (U+200B) at character 9"),
    "a line break inside": (f"{TOKEN[:20]}\n{TOKEN[20:]}", "whitespace or a line break (U+000A) at character 21"),
    "a space inside": (f"{TOKEN[:5]} {TOKEN[5:]}", "whitespace or a line break (U+0020) at character 6"),
    "a no-break space inside": (f"{TOKEN[:5]}\u00a0{TOKEN[5:]}", "whitespace or a line break (U+00A0)"),
    "a quote on one side only": (f"\u201c{TOKEN}", "a quote character (U+201C) at character 1"),
    "a non-latin-1 character": (f"{TOKEN[:-1]}\u0435", "a non-ASCII character (U+0435)"),  # Cyrillic e
    "a latin-1 letter": (f"{TOKEN[:-1]}\u00e9", "a non-ASCII character (U+00E9)"),
    "a control character": (f"{TOKEN[:3]}\x00{TOKEN[3:]}", "an invisible character (U+0000)"),
    "nothing but quotes": ("\u201c\u201d", "is empty"),
}


def assert_no_part_of_the_token(message: str) -> None:
    pieces = {TOKEN[start:start + 6] for start in range(len(TOKEN) - 5)}
    assert not [piece for piece in pieces if piece in message], message


@pytest.mark.parametrize("raw", RESIDUE.values(), ids=RESIDUE.keys())
def test_unambiguous_residue_is_removed(raw):
    assert validate_token(raw) == TOKEN
    assert parse_secret(json.dumps({"api_url": "https://acme.api.kandji.io", "api_token": raw}),
                        fallback_url=None).token == TOKEN
    assert parse_secret(raw, fallback_url="https://acme.api.kandji.io").token == TOKEN


@pytest.mark.parametrize("raw, says", DAMAGE.values(), ids=DAMAGE.keys())
def test_damage_is_refused_saying_what_and_where_but_not_the_token(raw, says):
    with pytest.raises(ConfigurationError) as refused:
        parse_secret(json.dumps({"api_url": "https://acme.api.kandji.io", "api_token": raw}), fallback_url=None)
    message = str(refused.value)
    assert says in message and "in the Kandji secret" in message
    assert "Copy the token again from Kandji (Settings > Access > API Token)" in message
    assert_no_part_of_the_token(message)


def test_a_bom_before_a_json_secret_does_not_make_it_a_bare_token():
    secret = "\ufeff" + json.dumps({"api_url": "https://acme.api.kandji.io", "api_token": TOKEN})
    assert parse_secret(secret, fallback_url=None).token == TOKEN


# --- through the collector handler and the simulator --------------------------------------------------

@pytest.fixture
def collector_with_secret(aws, monkeypatch):
    sims = []

    def run(token_text: str):
        sim = KandjiSimulator(Fleet.generate(4, seed=8), token=TOKEN).start()
        sims.append(sim)
        create_bucket()
        arn = create_secret(json.dumps({"api_url": sim.api_url, "api_token": token_text}))
        for name, value in {"KANDJI_SECRET_ID": arn, "SNAPSHOT_BUCKET": BUCKET,
                            "KANDJI_ALLOW_INSECURE_LOCALHOST": "true"}.items():
            monkeypatch.setenv(name, value)
        return sim, load_handler("collector").lambda_handler({"scheduled_time": "2026-11-23T10:00:00Z"},
                                                             FakeLambdaContext())

    yield run
    for sim in sims:
        sim.stop()


def test_a_pasted_token_with_quotes_bearer_and_a_zero_width_space_collects(collector_with_secret):
    sim, result = collector_with_secret(RESIDUE["all at once"])
    assert result["devices"] == 4 and len(manifests()) == 1
    assert sim.tokens_seen == {f"Bearer {TOKEN}"}  # the cleaned token, exactly


def test_a_damaged_token_fails_before_any_request_with_a_clear_message(collector_with_secret, caplog):
    raw, says = DAMAGE["a zero-width space inside"]
    with pytest.raises(ConfigurationError) as refused:
        collector_with_secret(raw)
    assert says in str(refused.value)
    assert_no_part_of_the_token(str(refused.value))
    [logged] = [record for record in caplog.records if "collection failed" in record.getMessage()]
    assert says in logged.error  # the logged error says what to fix too, without the token
    assert_no_part_of_the_token(caplog.text + logged.error)


# --- through the CLI -----------------------------------------------------------------------------------

def test_cli_token_file_from_notepad_with_a_bearer_line_works(tmp_path, capsys, monkeypatch):
    for name in ("KANDJI_API_TOKEN", "KANDJI_API_URL", "KANDJI_ALLOW_INSECURE_LOCALHOST"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "token"
    token_file.write_bytes(("\ufeffBearer " + TOKEN + "\r\n").encode("utf-8"))
    token_file.chmod(0o600)
    with KandjiSimulator(Fleet.generate(3, seed=9), token=TOKEN) as sim:
        code = cli.main(["check", "--url", sim.base_url, "--allow-insecure-localhost", "--token-file", str(token_file)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sim.tokens_seen == {f"Bearer {TOKEN}"}


def test_cli_damaged_token_from_the_environment_says_where_it_came_from(capsys, monkeypatch):
    monkeypatch.setenv("KANDJI_API_TOKEN", f"{TOKEN[:-1]}\u00e9")
    code = cli.main(["check", "--url", "https://acme.api.kandji.io"])
    out, err = capsys.readouterr()
    assert code != 0
    assert "The Kandji API token from KANDJI_API_TOKEN contains a non-ASCII character (U+00E9)" in out + err
    assert_no_part_of_the_token(out + err)
