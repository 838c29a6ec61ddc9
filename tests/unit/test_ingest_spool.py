"""The ingest spool: order, commits, restarts, torn and corrupt entries, the size bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.errors import ConfigError
from logbus.spool import Spool, SpoolFull, replay


def _drain(spool: Spool, step: int = 3) -> list[bytes]:
    out: list[bytes] = []
    while len(spool):
        entries, position = spool.peek(step)
        if not entries:
            break
        out += entries
        spool.commit(position, len(entries))
    return out


def test_entries_come_out_in_the_order_they_went_in(tmp_path: Path) -> None:
    """Appended batches are read back from the head in order."""
    spool = Spool(tmp_path, fsync="never")
    spool.append([b"a", b"b"])
    spool.append([b"c"])
    assert len(spool) == 3
    assert _drain(spool) == [b"a", b"b", b"c"]
    assert len(spool) == 0


def test_peek_without_commit_gives_the_same_entries_again(tmp_path: Path) -> None:
    """Nothing leaves the spool until it is committed (confirmed)."""
    spool = Spool(tmp_path, fsync="never")
    spool.append([b"one", b"two"])
    first, _ = spool.peek(10)
    again, _ = spool.peek(10)
    assert first == again == [b"one", b"two"]


def test_uncommitted_entries_survive_a_restart(tmp_path: Path) -> None:
    """A gateway restarted replays what was not committed, and not what was."""
    spool = Spool(tmp_path, fsync="always")
    spool.append([b"1", b"2", b"3"])
    _, position = spool.peek(1)
    spool.commit(position, 1)
    spool.close()
    reopened = Spool(tmp_path)
    assert len(reopened) == 2
    assert _drain(reopened) == [b"2", b"3"]


def test_a_torn_last_entry_is_cut_off_when_reopened(tmp_path: Path) -> None:
    """A write cut by a crash loses only that entry; appends continue after it."""
    spool = Spool(tmp_path, fsync="always")
    spool.append([b"whole"])
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    with open(segment, "ab") as tail:
        tail.write(b"\x00\x00\x00\x09\x00\x00")  # a header cut short
    reopened = Spool(tmp_path)
    reopened.append([b"next"])
    assert _drain(reopened) == [b"whole", b"next"]


def test_a_corrupt_entry_is_skipped_and_counted(tmp_path: Path) -> None:
    """A payload whose checksum fails is not replayed; the ones around it are."""
    spool = Spool(tmp_path, fsync="always")
    spool.append([b"good1", b"BAD!!", b"good2"])
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    at = data.index(b"BAD!!")
    data[at] ^= 0xFF
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert _drain(reopened) == [b"good1", b"good2"]
    assert reopened.corrupt == 1


def _corrupt(path: Path, *payloads: bytes) -> None:
    """Flip a byte of each of ``payloads`` in the spool's segment at ``path``."""
    [segment] = path.glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    for payload in payloads:
        data[data.index(payload)] ^= 0xFF
    segment.write_bytes(bytes(data))


def test_a_reopened_spool_of_corrupt_entries_only_is_read_past_and_empty(
    tmp_path: Path,
) -> None:
    """Entries that all fail their checksum are waiting until read past, then gone."""
    spool = Spool(tmp_path, fsync="always")
    spool.append([b"BAD-1", b"BAD-2"])
    spool.close()
    _corrupt(tmp_path, b"BAD-1", b"BAD-2")
    reopened = Spool(tmp_path)
    sent: list[object] = []
    assert replay(reopened, sent.extend) == 0
    assert (len(reopened), reopened.corrupt, sent) == (0, 2, [])


def test_entries_corrupted_while_the_spool_is_open_leave_it_empty_once_read(
    tmp_path: Path,
) -> None:
    """Appended (so counted) entries whose bytes then go bad still leave len() at 0."""
    spool = Spool(tmp_path, fsync="always")
    spool.append([b"BAD-1", b"good", b"BAD-2"])
    _corrupt(tmp_path, b"BAD-1", b"BAD-2")
    entries, position = spool.peek(10)
    spool.commit(position, len(entries))
    assert (entries, len(spool), spool.corrupt) == ([b"good"], 0, 2)
    spool.append([b"next"])
    assert (len(spool), _drain(spool)) == (1, [b"next"])


def test_the_size_bound_refuses_a_batch_whole(tmp_path: Path) -> None:
    """Past max_bytes, append raises SpoolFull and writes nothing of the batch."""
    spool = Spool(tmp_path, max_bytes=100, fsync="never")
    spool.append([b"x" * 40])
    with pytest.raises(SpoolFull):
        spool.append([b"y" * 10, b"z" * 40])
    assert len(spool) == 1


def test_confirmed_segments_are_deleted(tmp_path: Path) -> None:
    """Segments wholly behind the head are removed, so disk use falls after replay."""
    spool = Spool(tmp_path, fsync="never", segment_bytes=64)
    for n in range(20):
        spool.append([b"%02d" % n * 10])
    assert len(list(tmp_path.glob("seg-*.log"))) > 3
    assert len(_drain(spool, step=4)) == 20
    assert len(list(tmp_path.glob("seg-*.log"))) == 1
    assert spool.size == 0


def test_an_unknown_fsync_policy_is_a_configuration_error(tmp_path: Path) -> None:
    """The policy is checked when the spool opens."""
    with pytest.raises(ConfigError, match="fsync"):
        Spool(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.binary(max_size=50), min_size=1, max_size=5), max_size=8),
    st.integers(1, 7),
    st.integers(16, 200),
)
def test_any_appends_and_commits_replay_everything_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[bytes]], step: int, seg: int
) -> None:
    """Whatever the batches, segment size and read step, replay is the appends, in order."""
    path = tmp_path_factory.mktemp("spool")
    spool = Spool(path, fsync="never", segment_bytes=seg)
    expected = []
    for batch in batches:
        spool.append(batch)
        expected += batch
    spool.close()
    assert _drain(Spool(path, fsync="never", segment_bytes=seg), step) == expected


def test_a_spool_directory_serves_one_gateway_at_a_time(tmp_path: Path) -> None:
    """A second spool on an open directory is refused; after close it opens."""
    first = Spool(tmp_path, fsync="never")
    with pytest.raises(ConfigError, match="in use"):
        Spool(tmp_path, fsync="never")
    first.close()
    Spool(tmp_path, fsync="never").close()
