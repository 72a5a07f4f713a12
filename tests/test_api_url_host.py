"""The token goes only to the host the URL was validated for: a URL parsers read differently is refused.

`https://evil.example\\.api.kandji.io` ends in `.api.kandji.io` as text, but urllib3 (and so requests)
connects to `evil.example`. A loopback listener stands in for that other host: the HTTP stack reaches
it as an HTTPS proxy, so any connection attempt the collector makes to evil.example arrives there.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests
from aws_helpers import BUCKET, create_bucket, create_secret
from conftest import FakeLambdaContext, load_handler

from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.kandji.client import KandjiClient
from kandji_snapshots.kandji.config import KandjiCredentials, validate_api_url
from kandji_snapshots.kandji.rate_limiter import RateLimiter
from simulator import Fleet, KandjiSimulator

TOKEN = "kst-host-check-7d3e91c0"


class Listener:
    """A TCP listener on 127.0.0.1 that records the first bytes of every connection and closes it."""

    END = b"end-of-test marker"

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._received: list[bytes] = []
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    data = connection.recv(4096)
                except OSError:
                    data = b""
            if data == self.END:
                self._ended.set()
            else:
                self._received.append(data)

    @property
    def received(self) -> list[bytes]:
        """What every connection made so far sent. Connections are served one at a time in the order they
        came: once a last one of our own has been served, the earlier ones are recorded, however slow the
        machine is."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as marker:
            marker.sendall(self.END)
            assert self._ended.wait(60), "the listener did not serve its connections"
        self._ended.clear()
        return list(self._received)

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def other_host(monkeypatch):
    listener = Listener()
    # Every host but loopback (moto, the simulator) is reached through the listener.
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listener.port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{listener.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield listener
    listener.close()


@pytest.mark.parametrize("url", [
    "https://evil.example\\.api.kandji.io",
    "https://evil.example\\.acme.api.kandji.io/api/v1/",
])
def test_a_backslash_url_sends_nothing_to_the_host_urllib3_would_connect_to(aws, other_host, monkeypatch, url):
    create_bucket()
    arn = create_secret(json.dumps({"api_url": url, "api_token": TOKEN}))
    monkeypatch.setenv("KANDJI_SECRET_ID", arn)
    monkeypatch.setenv("SNAPSHOT_BUCKET", BUCKET)
    monkeypatch.delenv("KANDJI_ALLOW_INSECURE_LOCALHOST", raising=False)
    with pytest.raises(ConfigurationError, match="contains a backslash at position 21") as refused:
        load_handler("collector").lambda_handler({"scheduled_time": "2026-11-23T10:00:00Z"},
                                                 FakeLambdaContext(remaining_ms=60_000))
    assert TOKEN not in str(refused.value)
    assert other_host.received == []  # no connection, so no token, ever reached the other host


def test_the_clients_session_refuses_every_url_but_the_validated_origin(other_host):
    fleet = Fleet.generate(3, seed=5)
    with KandjiSimulator(fleet, token=TOKEN) as sim:
        session = requests.Session()
        endpoint = validate_api_url(sim.api_url, allow_insecure_localhost=True)
        client = KandjiClient(KandjiCredentials(endpoint, TOKEN), limiter=RateLimiter(100), session=session)
        assert len(client.list_devices()) == 3  # the validated origin works
        for elsewhere in (f"http://127.0.0.1:{other_host.port}/api/v1/devices",
                          f"http://{endpoint.hostname}.evil.example:{endpoint.port}/api/v1/devices",  # a longer host
                          "https://evil.example/api/v1/devices"):
            with pytest.raises(ConfigurationError, match="outside the validated Kandji API host"):
                session.get(elsewhere, headers={"Authorization": f"Bearer {TOKEN}"})
    assert other_host.received == []


def test_device_ids_cannot_leave_the_api_path():
    endpoint = validate_api_url("https://acme.api.kandji.io")
    from kandji_snapshots.kandji.config import path_segment
    assert endpoint.url(f"devices/{path_segment('x/../../@evil.example?#')}/details") == (
        "https://acme.api.kandji.io/api/v1/devices/x%2F..%2F..%2F%40evil.example%3F%23/details")
    with pytest.raises(ValueError):
        endpoint.url("//evil.example/x")
