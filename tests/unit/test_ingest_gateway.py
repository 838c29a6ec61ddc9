"""The gateway's plan: listener addresses, sizes, the service file, what cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from logbus.errors import ConfigError
from logbus.ingest.config import parse_size, read_service_file
from logbus.ingest.gateway import IngestPlan, Listen

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("514", "127.0.0.1", 514),
        (":514", "127.0.0.1", 514),
        ("0.0.0.0:6514", "0.0.0.0", 6514),
        ("[::1]:514", "::1", 514),
        ("[::]:0", "::", 0),
    ],
)
def test_addresses_bind_to_loopback_unless_they_name_a_host(address, host, port) -> None:
    """A bare port is 127.0.0.1; a host or [v6] address is taken as written."""
    listen = Listen.parse("tcp", address)
    assert (listen.host, listen.port) == (host, port)


@pytest.mark.parametrize("address", ["", "host:", "x:99999", "tcp"])
def test_a_bad_address_is_a_configuration_error(address: str) -> None:
    """An address without a port in 0..65535 is refused in one line."""
    with pytest.raises(ConfigError, match="port"):
        Listen.parse("udp", address)


def test_listener_names_label_their_metrics() -> None:
    """The metrics label says kind, host and port (or the socket's path)."""
    assert Listen.parse("relp", "[::1]:2514").name == "relp:[::1]:2514"
    assert Listen.parse("unix", "/dev/log").name == "unix:/dev/log"


@pytest.mark.parametrize(
    ("text", "size"), [("65536", 65536), ("64k", 65536), ("512M", 512 << 20), ("1G", 1 << 30)]
)
def test_sizes_read_in_powers_of_1024(text: str, size: int) -> None:
    """Sizes accept k, M and G suffixes."""
    assert parse_size(text) == size


def test_the_shipped_service_file_reads() -> None:
    """config/services/ingest.toml is a valid [ingest] table."""
    options = read_service_file(ROOT / "config/services/ingest.toml")
    assert options["relp"] == ["0.0.0.0:2514"] and options["spool_fsync"] == "always"


def test_a_service_file_with_an_unknown_key_names_it(tmp_path: Path) -> None:
    """A typo in the service file is a configuration error naming the key."""
    path = tmp_path / "ingest.toml"
    path.write_text('[ingest]\ntcpp = ["514"]\n')
    with pytest.raises(ConfigError, match="tcpp"):
        read_service_file(path)


def test_a_plan_needs_a_listener_and_tls_needs_its_files() -> None:
    """No listener, or --tls without --cert/--key, is refused before anything binds."""
    with pytest.raises(ConfigError, match="no listener"):
        IngestPlan(listeners=()).check()
    with pytest.raises(ConfigError, match="--cert"):
        IngestPlan(listeners=(Listen.parse("tls", "6514"),)).check()
