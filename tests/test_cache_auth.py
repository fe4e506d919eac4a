"""Signed disk cache entries: a forged, foreign or unsigned entry is refused, never unpickled.

The attack this guards against: someone who can write to a cache directory plants
an entry that unpickles to a call of their choice. Here the call writes a marker
file (never a real command), so a test sees whether it ran.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import threading
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import cache_auth
from nbflow.cache import DiskStore

TEAM_KEY = "team-key-0123456789abcdef"


class Payload:
    """Unpickles to ``Path(marker).write_text("ran")``: code run by loading the entry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


#: calls of the task ``answer`` (a global: a closure value would be part of its cache key)
CALLS: list[str] = []


def _flow(store: DiskStore) -> nf.Flow:
    flow = nf.Flow("signed", cache=store)

    @flow.task
    def answer():
        CALLS.append("answer")
        return 42

    @flow.task
    def double(answer):
        return answer * 2

    return flow


def _old_format(payload: bytes) -> bytes:
    """An entry as nbflow wrote them before entries were signed (an unkeyed checksum)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(payload)
    h.update(b"\0")
    return b"nbflow-result 1 %s %d\n" % (h.hexdigest().encode(), len(payload)) + payload


def _forge(how: str, entry: Path, key: str, payload: bytes) -> bytes:
    if how == "unsigned, old format":
        return _old_format(payload)
    if how == "signed with another key":
        other = cache_auth.SigningKey.from_text("an attacker's own key, 32 chars", "attacker")
        return cache_auth.seal(other, key, payload) + payload
    # our key id copied from a real entry, a MAC made up
    real = cache_auth.parse_header(entry.read_bytes())
    assert real is not None
    return b"nbflow-result 2 %s %s %d\n" % (real.key_id.encode(), b"0" * 64,
                                             len(payload)) + payload


@pytest.mark.parametrize("how", ["unsigned, old format", "signed with another key",
                                 "our key id, made-up MAC"])
def test_a_forged_entry_is_refused_not_run_and_the_task_recomputed(tmp_path, caplog, how):
    CALLS.clear()
    store = DiskStore(tmp_path / "cache")
    run = _flow(store).run()
    assert run.results["double"] == 84 and store.flush(10)
    key = run.task("answer").key
    entry = store.file(key)
    marker = tmp_path / "marker"
    entry.write_bytes(_forge(how, entry, key, pickle.dumps(Payload(marker))))

    again = DiskStore(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="nbflow.cache"):
        run = _flow(again).run()
    assert not marker.exists()  # the planted call never ran
    assert run.states == {"answer": "succeeded", "double": "cached"}
    assert run.results["answer"] == 42 and CALLS == ["answer", "answer"]
    [warning] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert str(entry) in warning and key in warning
    reason = {"unsigned, old format": "older nbflow, without a MAC",
              "signed with another key": "signed with another key",
              "our key id, made-up MAC": "MAC does not match"}[how]
    assert reason in warning
    assert again.flush(10)
    assert again.get(key) == (True, 42)  # the recomputed result replaced the forged file


def test_has_checks_the_mac_without_unpickling_and_names_the_task(tmp_path, caplog):
    store = DiskStore(tmp_path)
    store.put("aa11", [1, 2])
    store.flush(10)
    assert store.has("aa11") and "aa11" in store and "bb22" not in store
    marker = tmp_path / "marker"
    payload = pickle.dumps(Payload(marker))
    store.file("aa11").write_bytes(_old_format(payload))
    with caplog.at_level(logging.WARNING, logger="nbflow.cache"):
        assert not store.has("aa11", task="answer[3]")
    assert not marker.exists()
    assert f"refused {store.file('aa11')} (task 'answer[3]', cache key aa11)" in caplog.text
    store.file("aa11").write_bytes(cache_auth.seal(store.signing_key, "aa11", payload)
                                   + payload[:-1])
    assert "aa11" not in store  # truncated
    assert not marker.exists()


def test_an_entry_moved_to_another_cache_key_is_refused(tmp_path):
    store = DiskStore(tmp_path)
    store.put("aa11", "the result of aa11")
    store.flush(10)
    store.file("bb22").parent.mkdir()
    store.file("bb22").write_bytes(store.file("aa11").read_bytes())
    assert store.get("bb22") == (False, None)
    assert store.get("aa11") == (True, "the result of aa11")


def test_a_team_key_shares_entries_and_refuses_those_of_a_personal_key(tmp_path, monkeypatch):
    personal = DiskStore(tmp_path)
    personal.put("cafe", "mine")
    personal.flush(10)
    monkeypatch.setenv("NBFLOW_CACHE_KEY", TEAM_KEY)
    alice = DiskStore(tmp_path)
    assert alice.signing_key.source == "NBFLOW_CACHE_KEY"
    assert alice.get("cafe") == (False, None)  # signed with the personal key
    alice.put("f00d", {"shared": True})
    alice.flush(10)
    bob = DiskStore(tmp_path, signing_key=cache_auth.SigningKey.from_text(TEAM_KEY, "bob"))
    assert bob.get("f00d") == (True, {"shared": True})
    monkeypatch.delenv("NBFLOW_CACHE_KEY")
    assert DiskStore(tmp_path).get("f00d") == (False, None)
    assert DiskStore(tmp_path).get("cafe") == (True, "mine")


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_the_key_file_is_made_once_with_mode_0600_where_the_variable_says(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "er" / "cache-key"
    monkeypatch.setenv("NBFLOW_CACHE_KEY_FILE", str(path))
    assert cache_auth.load_key(create=False) is None and not path.exists()
    keys: list[cache_auth.SigningKey | None] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        keys.append(cache_auth.load_key())

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k.id for k in keys if k is not None}) == 1  # racing creators agree on one key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    assert [p.name for p in path.parent.iterdir()] == ["cache-key"]  # no temporary left
    assert DiskStore(tmp_path / "c").signing_key.source == str(path)


def test_the_default_key_file_is_under_the_config_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("NBFLOW_CACHE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    if os.name != "nt":
        assert cache_auth.key_file() == tmp_path / "nbflow" / "cache-key"
    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    assert cache_auth.default_key_file().parts[-2:] == ("nbflow", "cache-key")


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o620, 0o602, 0o604])
def test_a_key_file_others_could_write_or_everyone_read_is_refused(tmp_path, monkeypatch, mode):
    path = tmp_path / "cache-key"
    path.write_text("k" * 40)
    path.chmod(mode)
    monkeypatch.setenv("NBFLOW_CACHE_KEY_FILE", str(path))
    with pytest.raises(nf.NbflowError, match=f"{path} has mode {mode:o}.*chmod 600") as info:
        DiskStore(tmp_path / "cache")
    assert type(info.value).__name__ == "CacheKeyError"
    assert not (tmp_path / "cache").exists()
    path.chmod(0o640)  # a team's key file may be readable by its group
    assert DiskStore(tmp_path / "cache").signing_key.source == str(path)


def test_a_short_or_unreadable_key_is_a_one_line_error(tmp_path, monkeypatch):
    from nbflow.errors import CacheKeyError

    monkeypatch.setenv("NBFLOW_CACHE_KEY", "secret")
    with pytest.raises(CacheKeyError, match="NBFLOW_CACHE_KEY is 6 characters long; use at least 16"):
        DiskStore(tmp_path)
    monkeypatch.delenv("NBFLOW_CACHE_KEY")
    monkeypatch.setenv("NBFLOW_CACHE_KEY_FILE", str(tmp_path))  # a directory
    with pytest.raises(CacheKeyError, match=f"cannot read the cache signing key file {tmp_path}"):
        DiskStore(tmp_path / "c")
    monkeypatch.setenv("NBFLOW_CACHE_KEY_FILE", str(tmp_path / "file" / "key"))
    (tmp_path / "file").write_text("a file where a directory should be")
    with pytest.raises(CacheKeyError, match="cannot create the cache signing key file"):
        DiskStore(tmp_path / "c")
