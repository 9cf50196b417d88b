"""fsutil.atomic_write: the destination is the old or the new file, never a mix, and a failed
write leaves no temporary file behind (a key copy left in a deploy directory would be a leak)."""

from __future__ import annotations

import os
import stat

import pytest

from ntspki.store import fsutil


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_file_with_owner_mode_set_before_the_rename(tmp_path):
    dest = tmp_path / "key.pem"
    dest.write_bytes(b"old")
    fsutil.atomic_write(dest, b"new", 0o640)
    assert dest.read_bytes() == b"new"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_a_failure_before_the_rename_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    dest = tmp_path / "key.pem"
    dest.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        fsutil.atomic_write(dest, b"new", 0o600)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_an_unknown_owner_fails_before_anything_is_visible(tmp_path):
    dest = tmp_path / "cert.pem"
    if os.geteuid() != 0:
        pytest.fail("this test needs root (fchown to another uid)")
    # fchown to an id out of range fails after the temp file exists: it must go too.
    with pytest.raises((OSError, OverflowError)):
        fsutil.atomic_write(dest, b"data", 0o644, uid=2**32, gid=2**32)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_stale_temps_of_exactly_that_file_are_removed(tmp_path):
    """What a write killed before its rename leaves (`.NAME.XXXXXXXX.tmp`) goes; the file itself,
    other files' temps and look-alikes stay."""
    dest = tmp_path / "ntp.key"
    dest.write_bytes(b"key")
    stale = [tmp_path / ".ntp.key.0123abcd.tmp", tmp_path / ".ntp.key.deadbeef.tmp"]
    keep = [".ntp.key.previous.0123abcd.tmp", ".ntp.crt.0123abcd.tmp", ".ntp.key.0123abc.tmp", "ntp.key.0123abcd.tmp"]
    for p in stale:
        p.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(fsutil.remove_stale_temps(dest)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ntp.key", *keep])
    assert fsutil.remove_stale_temps(tmp_path / "missing-dir" / "x") == []
