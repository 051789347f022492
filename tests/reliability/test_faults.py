"""Faults: corrupt bytes, kill mid-write, concurrent writers, disk full, read-only
directories, interrupted verify. Real processes, real mounts where the machine allows
(root: a 64 KiB tmpfs, a read-only tmpfs), else an injected ``ENOSPC`` / a skip."""

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

from rnnmem.errors import (CheckpointError, CorruptCheckpointError, DirectoryLockedError,
                           RunDirectoryConflictError, StorageError)
from rnnmem.files import DirLock
from rnnmem.models.registry import (build_model, content_digest, load, load_checkpoint,
                                    save_checkpoint)
from rnnmem.train import TrainConfig, train

from campaign import run_cli


def _cfg(out, **kw):
    base = dict(model="diagonal_ssm", task="lf:exponential", model_kwargs={"width": 3},
                task_kwargs={"n_samples": 16, "length": 8}, steps=6, eval_every=3,
                checkpoint_every=2, batch_size=8, dtype="float64", device="cpu",
                out_dir=None if out is None else str(out))
    base.update(kw)
    return TrainConfig(**base)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- corrupt bytes
def _member_spans(path):
    """(name, start, size) of every stored member's bytes inside the zip file."""
    raw = Path(path).read_bytes()
    spans = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            off = info.header_offset
            n, extra = (int.from_bytes(raw[off + 26:off + 28], "little"),
                        int.from_bytes(raw[off + 28:off + 30], "little"))
            spans.append((info.filename, off + 30 + n + extra, info.file_size))
    return raw, spans


def test_every_flipped_byte_of_the_stored_values_is_refused(tmp_path):
    """Tensors, the pickled structure and the RNG state: a flip in any stored value byte is a
    CorruptCheckpointError (sampled positions of every member; the archive's header fields,
    which torch's reader ignores, carry no value). A byte of the pickle that holds no value
    (a memo index, say: where it lands depends on the length of the run's path, which the
    pickle stores) may be flipped without harm; the content read is then the signed content
    bit for bit, which is checked. Every tensor byte is a value and must be refused."""
    c = _cfg(tmp_path / "run")
    train(c, progress=False)
    path = tmp_path / "run" / "last.pt"
    signed = content_digest(load_checkpoint(path))
    raw, spans = _member_spans(path)
    rng = random.Random(0)
    tried = refused = 0
    for name, start, size in spans:
        if not (name.endswith(".pkl") or "/data/" in name) or size == 0:
            continue  # version/byteorder/serialization_id records hold no value
        for k in {0, size - 1, *rng.sample(range(size), min(size, 6))}:
            b = bytearray(raw)
            b[start + k] ^= 1 << rng.randrange(8)
            bad = tmp_path / "bad.pt"
            bad.write_bytes(bytes(b))
            tried += 1
            try:
                obj = load_checkpoint(bad)
            except CheckpointError as e:
                assert str(bad) in str(e)
                refused += 1
                continue
            assert "/data/" not in name, f"flipped tensor byte {k} of {name} was accepted"
            assert content_digest(obj) == signed, f"byte {k} of {name} changed a value"
    assert tried >= 20 and refused >= tried - 2


def test_flipped_rng_state_refused_on_resume_and_nothing_trained(tmp_path):
    c = _cfg(tmp_path / "run")
    train(c, progress=False, callback=lambda s, _: s == 4)
    path = tmp_path / "run" / "last.pt"
    obj = torch.load(path, weights_only=True)
    data = obj["extra"]["train"]["rng"]["torch"].numpy().tobytes()
    raw = path.read_bytes()
    at = raw.find(data)
    assert at > 0
    b = bytearray(raw)
    b[at + 100] ^= 0x04
    path.write_bytes(bytes(b))
    before = path.read_bytes()
    with pytest.raises(CorruptCheckpointError, match="does not match its SHA-256"):
        train(c, progress=False, resume=True)
    assert path.read_bytes() == before  # not overwritten by a new run


def test_digest_is_of_the_content_and_resigned_checkpoints_load(tmp_path):
    m = build_model("diagonal_ssm", width=2, dtype="float64", device="cpu", seed=1)
    p = save_checkpoint(tmp_path / "a.pt", m)
    obj = load_checkpoint(p)
    assert "sha256" not in obj  # the digest is checked and removed
    obj2 = torch.load(p, weights_only=True)
    assert obj2["sha256"] == content_digest(obj2)
    obj2["state_dict"] = {k: v + 1 for k, v in obj2["state_dict"].items()}
    torch.save(obj2, tmp_path / "b.pt")  # edited without a new digest
    with pytest.raises(CorruptCheckpointError):
        load(tmp_path / "b.pt")
    obj2["sha256"] = content_digest(obj2)
    torch.save(obj2, tmp_path / "c.pt")  # edited and re-signed: a valid, different model
    new, old = load(tmp_path / "c.pt").state_dict(), m.state_dict()
    assert all(torch.equal(new[k], old[k] + 1) for k in old)


def test_unverifiable_and_odd_files(tmp_path):
    m = build_model("diagonal_ssm", width=2, dtype="float64", device="cpu")
    p = save_checkpoint(tmp_path / "a.pt", m)
    obj = torch.load(p, weights_only=True)
    obj.pop("sha256")
    obj["version"] = 1
    torch.save(obj, tmp_path / "v1.pt")
    with pytest.raises(CorruptCheckpointError, match="carries no SHA-256"):
        load_checkpoint(tmp_path / "v1.pt")
    assert load_checkpoint(tmp_path / "v1.pt", allow_unverified=True)["model"] == "diagonal_ssm"
    old = load(tmp_path / "v1.pt", allow_unverified=True)  # trusted: read and re-saved
    save_checkpoint(tmp_path / "v2.pt", old)
    assert load_checkpoint(tmp_path / "v2.pt")["version"] == 2
    for data, needle in ((b"", "empty"), (b"{}\n", "not a torch zip"),
                         (p.read_bytes()[:200], "truncated or corrupt")):
        (tmp_path / "x.pt").write_bytes(data)
        with pytest.raises(CorruptCheckpointError, match=needle):
            load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- kill mid-write
def test_kill_mid_run_then_resume_cleans_temporaries_and_finishes(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(out, steps=60, checkpoint_every=1, eval_every=30)
    code = textwrap.dedent(f"""
        import json, sys
        from rnnmem.train import TrainConfig, train
        train(TrainConfig.from_json({cfg.to_json()!r}), progress=False)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], env=_env())
    deadline = time.time() + 120
    while not (out / "last.pt").is_file() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert (out / "last.pt").is_file()
    load_checkpoint(out / "last.pt")  # whatever moment it died at, the file is whole
    (out / ".last.pt.dead1234.tmp").write_bytes(b"half a checkpoint")  # a crashed writer's
    r = train(cfg, progress=False, resume=True)
    assert r.steps == 60 and r.stopped == "completed"
    assert not [q.name for q in out.iterdir() if q.name.endswith(".tmp")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"config.json", "last.pt", "metrics.csv"}


# ----------------------------------------------------------------------------- two writers
def test_second_writer_is_refused_while_the_first_holds_the_directory(tmp_path):
    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        import sys, time
        from rnnmem.files import DirLock
        with DirLock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env=_env())
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLockedError, match=f"pid {p.pid}"):
            train(_cfg(out), progress=False)
        rc, _, err, _ = run_cli(["train", "--model", "diagonal_ssm", "--task", "lf:exponential",
                                 "-q", "--model-arg", "width=2", "--out", str(out)])
        assert rc == 2 and "being written by pid" in err and err.count("\n") == 1
        assert not (out / "config.json").exists()
    finally:
        p.kill()
        p.wait()
    train(_cfg(out), progress=False)  # the lock died with its process


def test_two_real_runs_on_one_directory_never_mix(tmp_path):
    """Two `rnnmem train` processes at once on one --out: one runs, the other is refused
    (lock or conflict), and the directory holds one run's files, consistent."""
    out = tmp_path / "run"
    common = [sys.executable, "-m", "rnnmem", "train", "--task", "lf:exponential", "-q",
              "--task-arg", "n_samples=16", "--task-arg", "length=8", "--steps", "40",
              "--checkpoint-every", "5", "--out", str(out)]
    a = subprocess.Popen(common + ["--model", "diagonal_ssm", "--model-arg", "width=3"],
                         stderr=subprocess.PIPE, text=True, env=_env())
    b = subprocess.Popen(common + ["--model", "rnn", "--model-arg", "width=3"],
                         stderr=subprocess.PIPE, text=True, env=_env())
    ea, eb = a.communicate(timeout=600)[1], b.communicate(timeout=600)[1]
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (a.returncode, ea, b.returncode, eb)
    loser = eb if b.returncode == 2 else ea
    assert loser.count("\n") == 1 and ("being written by" in loser or "another run" in loser)
    winner = "diagonal_ssm" if a.returncode == 0 else "rnn"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == winner and load_checkpoint(out / "last.pt")["model"] == winner
    assert load_checkpoint(out / "best.pt")["model"] == winner


def test_reused_directory_is_refused_resumed_or_forced(tmp_path):
    out = tmp_path / "run"
    train(_cfg(out), progress=False)
    with pytest.raises(RunDirectoryConflictError, match="holds another run .*diagonal_ssm"):
        train(_cfg(out, model="rnn", model_kwargs={"width": 2}), progress=False)
    with pytest.raises(RunDirectoryConflictError, match="--resume continues it"):
        train(_cfg(out), progress=False)
    assert train(_cfg(out, steps=8), progress=False, resume=True).steps == 8
    r = train(_cfg(out, model="rnn", model_kwargs={"width": 2}), progress=False,
              force=True)
    assert r.steps == 6 and load_checkpoint(out / "last.pt")["model"] == "rnn"
    (out / "last.pt").unlink()
    (out / "last.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        train(_cfg(out, model="rnn", model_kwargs={"width": 2}), progress=False,
              resume=True)


# ----------------------------------------------------------------------------- disk full
@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_on_a_small_tmpfs(tmp_path):
    with _tmpfs(tmp_path / "small", "size=64k") as d:
        rc, _, err, escaped = run_cli(["train", "--model", "diagonal_ssm", "--task",
                                       "lf:exponential", "-q", "--model-arg", "width=64",
                                       "--task-arg", "n_samples=16", "--steps", "4",
                                       "--out", str(d / "run")])
        assert not escaped and rc == 2 and err.count("\n") == 1, err
        assert "no space left" in err and str(d / "run") in err
        assert not [q for q in (d / "run").iterdir() if q.name.endswith(".tmp")]
        with contextlib.suppress(OSError), open(d / "filler", "wb") as fh:
            while True:  # fill what the failed run's cleanup freed
                fh.write(b"\0" * 1024)
                fh.flush()
        rc, _, err, escaped = run_cli(["verify", "--only", "best-parameterisation",
                                       "--budget", "smoke", "-q", "--out", str(d / "rep")])
        assert not escaped and rc == 2 and "no space left" in err and err.count("\n") == 1


def test_disk_full_injected(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: ENOSPC from fsync (the last step of every write)."""
    real = os.fsync

    def full(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}") is False:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    rc, _, err, escaped = run_cli(["train", "--model", "diagonal_ssm", "--task",
                                   "lf:exponential", "-q", "--model-arg", "width=2",
                                   "--steps", "2", "--out", str(tmp_path / "run")])
    assert not escaped and rc == 2 and "no space left" in err and err.count("\n") == 1, err
    assert not [q for q in (tmp_path / "run").iterdir() if q.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- read-only
def test_read_only_directory(tmp_path):
    with _tmpfs(tmp_path / "ro", "size=64k,ro") as d:
        for argv in (["train", "--model", "diagonal_ssm", "--task", "lf:exponential", "-q",
                      "--model-arg", "width=2", "--steps", "2", "--out", str(d / "run")],
                     ["verify", "--only", "best-parameterisation", "--budget", "smoke", "-q",
                      "--out", str(d / "rep")]):
            rc, _, err, escaped = run_cli(argv)
            assert not escaped and rc == 2 and err.count("\n") == 1, err
            assert "read-only" in err and str(d) in err


# ----------------------------------------------------------------------------- verify
@pytest.fixture
def temp_claims():
    from rnnmem.proofs_check import registry as R

    R._load()
    saved = dict(R._REGISTRY)
    yield R
    R._REGISTRY.clear()
    R._REGISTRY.update(saved)


def test_verify_keeps_finished_claims_on_ctrl_c_and_reports_errors_apart(tmp_path,
                                                                         temp_claims):
    R = temp_claims

    @R.claim("t-ok", title="t", statement="s", source="test", must_hold=True)
    def _ok(ctx):
        return R.Evidence("confirmed", summary="fine", metrics={"x": float("nan")})

    @R.claim("t-raises", title="t", statement="s", source="test", must_hold=True)
    def _raises(ctx):
        raise ValueError("the check itself broke")

    @R.claim("t-stop", title="t", statement="s", source="test")
    def _stop(ctx):
        raise KeyboardInterrupt

    out = tmp_path / "rep"
    rc, _, err, escaped = run_cli(["verify", "-q", "--out", str(out), "--only", "t-ok",
                                   "t-raises", "t-ok", "t-stop"])
    assert not escaped and rc == 130 and "2 finished claim(s) kept" in err
    data = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in data] == ["t-ok", "t-raises"]  # t-ok once
    assert data[0]["verdict"] == "confirmed" and data[0]["metrics"]["x"] is None
    assert data[1]["verdict"] == "error" and "the check itself broke" in data[1]["error"]
    assert "t-raises" in (out / "REPORT.md").read_text()
    rc, out_text, err, _ = run_cli(["verify", "-q", "--out", str(out), "--only", "t-ok",
                                    "t-raises"])
    assert rc == 1 and "ERROR (the check raised" in err and "FAILED (must hold)" not in err
    assert "(!)" not in out_text  # an error of the run is not a refuted identity
