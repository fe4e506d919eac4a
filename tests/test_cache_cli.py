"""``nbflow cache info`` / ``clear``: nothing created on a mistyped path, and only nbflow's
own entries counted or deleted."""

from __future__ import annotations

import pytest

from nbflow import cache_auth
from nbflow.cache import DiskStore
from nbflow.cli import main

NOT_OURS = b"my notes, in a file that happens to be named like a cache entry\n"


def _cache(tmp_path, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["cache", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_on_a_mistyped_path_is_a_one_line_error_and_creates_nothing(tmp_path, capsys):
    typo = tmp_path / "cahce"
    code, out, err = _cache(tmp_path, capsys, "info", "--cache-dir", str(typo))
    assert code == 2 and out == ""
    assert err.splitlines() == [f"nbflow cache: no cache directory at {typo}: it does not "
                                "exist (check --cache-dir or NBFLOW_CACHE_DIR)"]
    assert not typo.exists()
    (tmp_path / "a-file").write_text("x")
    code, _, err = _cache(tmp_path, capsys, "info", "--cache-dir", str(tmp_path / "a-file"))
    assert code == 2 and "it is not a directory" in err
    code, out, _ = _cache(tmp_path, capsys, "clear", "--cache-dir", str(typo))
    assert code == 0 and "does not exist; nothing to clear" in out and not typo.exists()


def test_clear_deletes_nbflow_entries_only(tmp_path, capsys):
    store = DiskStore(tmp_path)
    store.put("ab" + "1" * 30, [1, 2, 3])
    store.put("cd" + "2" * 30, "two")
    store.flush(10)
    foreign = tmp_path / "ab" / ("ab" + "f" * 30 + ".nbr")  # the name of an entry, not one
    foreign.write_bytes(NOT_OURS)
    misplaced = tmp_path / "ef" / "notes.nbr"
    misplaced.parent.mkdir()
    misplaced.write_bytes(NOT_OURS)
    old = tmp_path / "cd" / ("cd" + "3" * 30 + ".nbr")  # an unsigned entry of an older nbflow
    old.write_bytes(b"nbflow-result 1 " + b"0" * 32 + b" 4\n" + b"abcd")
    left_by_a_kill = tmp_path / "cd" / ".tmp-x1y2.nbr"
    left_by_a_kill.write_bytes(cache_auth.seal(store.signing_key, "cd", b"ab") + b"a")

    code, out, _ = _cache(tmp_path, capsys, "info", "--cache-dir", str(tmp_path))
    assert code == 0 and " 3 results, " in out
    assert "1 of them signed with another key or by an older nbflow" in out
    code, out, _ = _cache(tmp_path, capsys, "clear", "--cache-dir", str(tmp_path))
    assert code == 0 and "deleted 3 results" in out
    assert foreign.read_bytes() == NOT_OURS and misplaced.read_bytes() == NOT_OURS
    assert not old.exists() and not left_by_a_kill.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ab", "ef"]  # "cd" was emptied
    code, out, _ = _cache(tmp_path, capsys, "info", "--cache-dir", str(tmp_path))
    assert " 0 results, " in out


def test_the_store_counts_and_clears_only_its_entries(tmp_path):
    store = DiskStore(tmp_path)
    store.put("ab12", "x" * 100)
    store.flush(10)
    (tmp_path / "ab" / "ab99.nbr").write_bytes(NOT_OURS)
    assert len(store) == 1 and [p.name for p in store.files()] == ["ab12.nbr"]
    store.clear()
    assert len(store) == 0 and (tmp_path / "ab" / "ab99.nbr").read_bytes() == NOT_OURS


@pytest.mark.parametrize("action", ["info", "clear"])
def test_an_unusable_key_does_not_stop_info_or_clear(tmp_path, capsys, monkeypatch, action):
    store = DiskStore(tmp_path)
    store.put("ab12", 1)
    store.flush(10)
    monkeypatch.setenv("NBFLOW_CACHE_KEY", "short")
    code, out, _ = _cache(tmp_path, capsys, action, "--cache-dir", str(tmp_path))
    assert code == 0
    assert ("the signing key cannot be used" in out) == (action == "info")
