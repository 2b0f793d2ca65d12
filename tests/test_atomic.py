"""Atomic outputs: a failed write leaves neither a partial file nor a stray temporary beside it."""

from pathlib import Path

import pytest

from config.atomic import atomic_path, trim_jsonl, write_atomic


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.json"
    write_atomic(dest, "first")
    write_atomic(dest, b"second")
    assert dest.read_text() == "second"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.json"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_folder_is_swapped_as_a_whole(tmp_path: Path) -> None:
    dest = tmp_path / "frames"
    dest.mkdir()
    (dest / "00000.png").write_bytes(b"old")
    (dest / "00001.png").write_bytes(b"old")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "00000.png").write_bytes(b"new")
    assert sorted(p.name for p in dest.iterdir()) == ["00000.png"]
    assert (dest / "00000.png").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]  # the old folder was removed


def test_trim_jsonl_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n["not", "a record"]\n'
                   '{"step": 3, "loss": 0.125}\n{"step": 4, "lo')
    assert trim_jsonl(log, 2, rewrite=False) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    assert log.read_text().endswith('"lo')  # read only
    assert trim_jsonl(log, 3)[-1] == {"step": 3, "loss": 0.125}
    assert log.read_text() == '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n{"step": 3, "loss": 0.125}\n'
    assert trim_jsonl(tmp_path / "missing.jsonl", 3) == [] and not (tmp_path / "missing.jsonl").exists()
