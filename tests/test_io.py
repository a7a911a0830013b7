"""Atomic outputs: complete or absent, with the mode the umask gives."""

import os
import stat

import pytest

from netquant.io import atomic_path, read_json, write_json, write_text


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise KeyError("crash")
    assert read_json(target) == {"a": 1}


def test_outputs_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_text(tmp_path / "shared.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o640
