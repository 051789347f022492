"""rnnmem.files: atomic writes, manifests, directory locks, the JSON sanitiser."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnnmem.errors import CorruptFileError, DirectoryLockedError, StorageError
from rnnmem.files import (DirLock, atomic_write, atomic_writer, read_json,
                          remove_stale_temporaries, sha256_file, to_jsonable, verify_manifest,
                          write_json, write_manifest)


def test_atomic_write_mode_content_and_no_temporaries(tmp_path):
    p = atomic_write(tmp_path / "sub" / "a.txt", "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    mask = os.umask(0o022)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert [q.name for q in p.parent.iterdir()] == ["a.txt"]


def test_failed_block_leaves_target_untouched(tmp_path):
    p = atomic_write(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(p) as fh:
            fh.write(b"new, half")
            raise RuntimeError("writer died")
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]


def test_os_errors_are_named(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(StorageError, match="is a directory"):
        atomic_write(tmp_path / "d", "x")
    (tmp_path / "f").write_text("file")
    with pytest.raises(StorageError, match="not a directory|exists"):
        atomic_write(tmp_path / "f" / "x.txt", "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):  # pragma: no cover - CI runs as root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StorageError, match="permission"):
        atomic_write(ro / "x", "x")


def test_kill_mid_write_keeps_old_file_and_stale_temporary_is_removed(tmp_path):
    target = tmp_path / "big.bin"
    atomic_write(target, b"old")
    code = textwrap.dedent(f"""
        import os, sys, time
        from rnnmem.files import atomic_writer
        with atomic_writer({str(target)!r}) as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"old"
    stale = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1
    assert remove_stale_temporaries(tmp_path) == stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


def test_manifest_detects_one_flipped_byte(tmp_path):
    data = bytearray(np.arange(1000, dtype=np.float64).tobytes())
    atomic_write(tmp_path / "w.bin", bytes(data))
    write_json(tmp_path / "config.json", {"a": 1})
    m = write_manifest(tmp_path)
    assert set(m["files"]) == {"w.bin", "config.json"}
    verify_manifest(tmp_path)
    data[4321] ^= 0x01
    (tmp_path / "w.bin").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"w\.bin: SHA-256 does not match"):
        verify_manifest(tmp_path)
    verify_manifest(tmp_path, files=["config.json"])  # the other file is still fine
    (tmp_path / "config.json").unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        verify_manifest(tmp_path, files=["config.json"])


def test_manifest_missing_or_malformed(tmp_path):
    with pytest.raises(CorruptFileError, match="no manifest.json"):
        verify_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        verify_manifest(tmp_path)


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    b = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "r").write_bytes(b)
    assert sha256_file(tmp_path / "r", chunk=1 << 16) == hashlib.sha256(b).hexdigest()


def test_lock_excludes_a_second_process_and_is_released_on_kill(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from rnnmem.files import DirLock
        lock = DirLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLockedError, match=f"pid {proc.pid}"):
            DirLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with DirLock(tmp_path) as lk:  # the kernel released the dead holder's lock
        assert lk.held
    assert not lk.held


def test_to_jsonable_one_rule_for_non_finite():
    obj = {"a": float("nan"), "b": np.float32(np.inf), "c": np.array([1.0, np.nan]),
           "d": (1, 2), 3: np.int64(7), "e": True}
    out = to_jsonable(obj)
    assert out == {"a": None, "b": None, "c": [1.0, None], "d": [1, 2], "3": 7, "e": True}
    json.dumps(out, allow_nan=False)


def test_read_json_errors(tmp_path):
    with pytest.raises(StorageError, match="no such file"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe")
    with pytest.raises(CorruptFileError):
        read_json(tmp_path / "b.json")
