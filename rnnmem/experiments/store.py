"""``RunStore``: a content-addressed directory of finished runs.

Layout (``ROOT`` is ``--store DIR``, else ``$RNNMEM_STORE``, else ``~/.cache/rnnmem/runs``)::

    ROOT/store.json              {"format": "rnnmem-run-store", "version": 1}
    ROOT/runs/<hash>/            one finished run (read only after its manifest checks)
        run.json                 the Run (canonical JSON) and its hash
        metrics.json             status, final metrics, scalar evaluation results
        curve.json               the training curve: every evaluation row, per-step losses
        evaluations.json         memory function, perturbation curve, length report, splits
        model.pt                 the trained model (rnnmem checkpoint, weights_only)
        provenance.json          versions, git commit, device, threads, host, times, argv
        tensorboard/events.*     the curve for ``tensorboard --logdir ROOT``
        manifest.json            SHA-256 and size of every file above
    ROOT/.tmp/<hash>.<pid>.<n>/  a run being written (renamed to runs/<hash> when complete)
    ROOT/.locks/<hash>/.lock     held (flock) by the one process training <hash>
    ROOT/.attempts/<hash>        how many times a worker started <hash> (retries)

A run directory appears under ``runs/`` only by one ``rename`` of a complete temporary
directory, so a crashed writer leaves nothing readable there; loading checks every file
against the manifest and refuses a mismatch by name (:class:`rnnmem.errors.CorruptFileError`,
:class:`~rnnmem.errors.CorruptCheckpointError` for the model). A store or run written by a
newer result format is refused in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..errors import (CorruptCheckpointError, CorruptFileError, InvalidParameterError,
                      RnnmemError, StorageError)
from ..files import DirLock, read_json, storage_error, verify_manifest, write_json
from .run import RESULT_FORMAT, Run, code_digest, flatten

__all__ = ["RunStore", "RunResult", "Results", "STORE_FORMAT", "STORE_VERSION",
           "default_store_root"]

STORE_FORMAT = "rnnmem-run-store"
STORE_VERSION = 1
_COUNTER = itertools.count()


def _made_by(run_dir: Path) -> str | None:
    """The code digest in a run directory's provenance (None: absent or unreadable)."""
    try:
        return read_json(run_dir / "provenance.json").get("code")
    except (OSError, ValueError, RnnmemError):
        return None


def _sync_tree(directory: Path) -> None:
    """fsync every file under ``directory`` (in threads: the file system commits them
    together) and the directories themselves."""
    from concurrent.futures import ThreadPoolExecutor

    from ..files import _fsync_dir

    files = [p for p in directory.rglob("*") if p.is_file()]
    dirs = [directory] + [p for p in directory.rglob("*") if p.is_dir()]

    def sync(p: Path) -> None:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    try:
        with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
            list(pool.map(sync, files))
    except OSError as exc:
        raise storage_error(exc, directory) from None
    for d in dirs:
        _fsync_dir(d)


def _write_manifest_plain(directory: Path, extra: dict) -> None:
    """``manifest.json`` in the layout of :func:`rnnmem.files.write_manifest` (read by
    :func:`~rnnmem.files.verify_manifest`), written plainly: the directory is synced and
    renamed as a whole."""
    from ..files import MANIFEST, _manifest_files, sha256_file

    entries = {rel: {"sha256": sha256_file(directory / rel),
                     "size": (directory / rel).stat().st_size}
               for rel in _manifest_files(directory)}
    text = json.dumps({"files": entries, **extra}, indent=2, sort_keys=True)
    (directory / MANIFEST).write_text(text + "\n", encoding="utf-8")


def default_store_root() -> Path:
    """``$RNNMEM_STORE``, else ``~/.cache/rnnmem/runs``."""
    env = os.environ.get("RNNMEM_STORE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnmem" / "runs"


class RunStore:
    """A content-addressed store of finished runs (see the module docstring).

    Parameters
    ----------
    root : path, optional
        The store's directory (default :func:`default_store_root`). Created on first write.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_store_root()
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"store {self.root} is a file, not a directory",
                               path=str(self.root))
        self._check_format()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # ------------------------------------------------------------------ format
    def _check_format(self) -> None:
        meta = self.root / "store.json"
        if not meta.is_file():
            return
        d = read_json(meta)
        if not isinstance(d, dict) or d.get("format") != STORE_FORMAT:
            raise StorageError(f"{self.root} is not an rnnmem run store ({meta} says "
                               f"{d!r:.80})", path=str(self.root))
        if not isinstance(d.get("version"), int) or d["version"] > STORE_VERSION:
            raise StorageError(f"store {self.root} was written by a newer rnnmem (store "
                               f"format {d.get('version')!r}, this one reads up to "
                               f"{STORE_VERSION}); upgrade rnnmem or use another --store",
                               path=str(self.root))

    def ensure_writable(self) -> "RunStore":
        """Create the store's directories (and ``store.json``); a directory that cannot be
        written is a :class:`~rnnmem.errors.StorageError` naming it."""
        if getattr(self, "_writable", False):
            return self
        try:
            for sub in ("runs", ".tmp", ".locks", ".attempts"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            probe = self.root / ".tmp" / f".probe.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise storage_error(exc, self.root, "write the run store") from None
        meta = self.root / "store.json"
        if not meta.is_file():
            write_json(meta, {"format": STORE_FORMAT, "version": STORE_VERSION})
        self._writable = True
        return self

    # ------------------------------------------------------------------ paths
    @staticmethod
    def _hash(run: Run | str) -> str:
        if isinstance(run, Run):
            return run.hash
        if isinstance(run, str) and len(run) >= 6 and all(c in "0123456789abcdef" for c in run):
            return run
        raise InvalidParameterError(f"run: expected a Run or a hex hash, got {run!r:.60}")

    def path(self, run: Run | str) -> Path:
        return self.root / "runs" / self._hash(run)

    def has(self, run: Run | str) -> bool:
        """Whether the run is complete in the store (its directory exists; its content is
        checked when it is loaded)."""
        p = self.path(run)
        return (p / "manifest.json").is_file()

    def lock(self, run: Run | str) -> DirLock:
        """The lock held by the process that trains ``run``."""
        return DirLock(self.root / ".locks" / self._hash(run))

    def hashes(self) -> list[str]:
        """Hashes of every complete run in the store."""
        d = self.root / "runs"
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / "manifest.json").is_file())

    def other_code(self) -> list[str]:
        """Hashes of the complete runs made by code other than this process's
        (:func:`~rnnmem.experiments.code_digest` in their provenance differs, or is absent:
        a run from before digests were recorded). No lookup of this code returns them."""
        here = code_digest()
        return [h for h in self.hashes() if _made_by(self.path(h)) != here]

    def remove(self, runs) -> int:
        """Delete ``runs`` (a Run, a hash, or an iterable of them), e.g. to train them
        again, or the runs of :meth:`other_code`, with their derived results and attempt
        counts; returns how many were there. Each run directory leaves ``runs/`` by one
        rename before it is deleted, so a reader sees the whole run or none of it (a
        process reading one at that moment may fail)."""
        self.ensure_writable()
        removed = 0
        for h in [runs] if isinstance(runs, (Run, str)) else runs:
            h = self._hash(h)
            src = self.path(h)
            # (named like a writer's temporary, <hash>.<...>: clean_temporaries knows it)
            trash = self.root / ".tmp" / f"{h}.removed.{os.getpid()}.{next(_COUNTER)}"
            try:
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, trash)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise storage_error(exc, src) from None
            removed += 1
            for p in (trash, self.root / "derived" / h):
                shutil.rmtree(p, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.root / ".attempts" / h).unlink()
        index = self.root / "by-training"
        if removed and index.is_dir():  # entries naming a removed run (lookups skip them)
            for p in index.iterdir():
                with contextlib.suppress(OSError, InvalidParameterError):
                    if not p.name.startswith(".") and not self.has(p.read_text().strip()):
                        p.unlink()
        return removed

    # ------------------------------------------------------------------ shared training
    def _training_index(self, run: Run) -> Path:
        return self.root / "by-training" / run.training_hash

    def trained_by(self, run: Run) -> str | None:
        """The hash of a complete run in the store whose training is ``run``'s (same
        :attr:`Run.training_hash`, finished ``ok``), or None. Its weights and training
        curve are ``run``'s too: only the evaluations differ."""
        try:
            h = self._training_index(run).read_text().strip()
        except OSError:
            return None
        if not h or not self.has(h):
            return None
        try:
            other = self.load(h, verify=False)
        except Exception:  # noqa: BLE001 - a damaged entry is not reused
            return None
        if not other.ok or other.run.training_hash != run.training_hash:
            return None
        return h

    def note_training(self, run: Run) -> None:
        """Record that the complete, ``ok`` run ``run`` holds the weights of its training
        identity (a bookkeeping file renamed into place; losing it costs a retraining,
        never a result)."""
        p = self._training_index(run)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            tmp.write_text(run.hash + "\n")
            os.replace(tmp, p)
        except OSError as exc:
            raise storage_error(exc, p) from None

    # ------------------------------------------------------------------ attempts
    def attempts(self, run: Run | str) -> int:
        """How many times a worker started this run (1 unless it was retried)."""
        p = self.root / ".attempts" / self._hash(run)
        try:
            return int(p.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _count_attempt(self, h: str) -> int:
        """Count a start (under the run's lock; a bookkeeping file, renamed into place but
        not fsync-ed: losing it in a power cut loses a count, never a result)."""
        n = self.attempts(h) + 1
        p = self.root / ".attempts" / h
        tmp = p.with_name(f".{h}.{os.getpid()}.tmp")
        try:
            tmp.write_text(f"{n}\n")
            os.replace(tmp, p)
        except OSError as exc:
            raise storage_error(exc, p) from None
        return n

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def writing(self, run: Run) -> Iterator[Path]:
        """A fresh temporary directory for ``run``; when the block exits normally, every
        file in it is fsync-ed, the manifest written and the directory renamed to
        ``runs/<hash>`` in one step. On an exception the temporary is removed and nothing
        appears. The caller holds :meth:`lock`.

        The directory, not each file, is the unit written once: files inside it may be
        written plainly (no temporary name of their own), since nothing reads them before
        the rename, and they are made durable together (concurrent fsyncs share the file
        system's journal commits) before the manifest and the rename."""
        self.ensure_writable()
        h = run.hash
        tmp = self.root / ".tmp" / f"{h}.{os.getpid()}.{next(_COUNTER)}"
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise storage_error(exc, tmp) from None
        try:
            yield tmp
            _write_manifest_plain(tmp, {"result_format": RESULT_FORMAT, "hash": h})
            _sync_tree(tmp)  # every file, the manifest included, durable before the rename
            final = self.path(h)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if final.is_dir():  # finished elsewhere meanwhile: keep the first
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    raise storage_error(exc, final) from None
            from ..files import _fsync_dir

            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def clean_temporaries(self) -> list[str]:
        """Remove temporaries of runs whose writer is gone (their lock is free)."""
        removed = []
        d = self.root / ".tmp"
        if not d.is_dir():
            return removed
        for p in d.iterdir():
            if not p.is_dir():
                continue
            h = p.name.split(".", 1)[0]
            lk = self.lock(h)
            try:
                lk.acquire(blocking=False)
            except Exception:
                continue
            try:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
            finally:
                lk.release()
        return removed

    # ------------------------------------------------------------------ reading
    def load(self, run: Run | str, *, verify: bool = True) -> "RunResult":
        """The finished run, its files checked against the manifest (a mismatch raises
        :class:`~rnnmem.errors.CorruptFileError` naming the file)."""
        p = self.path(run)
        if not self.has(run):
            raise InvalidParameterError(f"run {self._hash(run)[:12]} is not in store "
                                        f"{self.root}")
        if verify:
            try:
                manifest = verify_manifest(p)
            except CorruptFileError as exc:
                if exc.path and exc.path.endswith("model.pt"):
                    raise CorruptCheckpointError(str(exc), path=exc.path) from None
                raise
        else:
            manifest = read_json(p / "manifest.json")
        fmt = manifest.get("result_format")
        if not isinstance(fmt, int) or fmt > RESULT_FORMAT:
            raise StorageError(f"{p} was written by a newer rnnmem (result format {fmt!r}, "
                               f"this one reads up to {RESULT_FORMAT}); upgrade rnnmem",
                               path=str(p))
        d = read_json(p / "run.json")
        stored = Run.from_dict(d["run"])
        return RunResult(stored, p, read_json(p / "metrics.json"))

    def results(self, runs: Iterable[Run]) -> "Results":
        """The finished ones of ``runs`` (missing runs are left out; see
        :attr:`Results.missing`)."""
        runs = list(runs)
        found, missing = [], []
        for r in runs:
            (found if self.has(r) else missing).append(r)
        return Results([self.load(r) for r in found], missing=missing, store=self)

    def all_results(self) -> "Results":
        return Results([self.load(h) for h in self.hashes()], store=self)

    def frame(self, protocol=None, *, budget: str | None = None):
        """A :class:`pandas.DataFrame`, one row per finished run of ``protocol`` (a
        :class:`~rnnmem.experiments.protocol.Protocol`, a list of runs, or ``None``: every
        run in the store), flat columns: ``hash``, ``status``, the run's dotted fields,
        ``metrics.*`` and scalar evaluation results ``eval.*``."""
        if protocol is None:
            return self.all_results().frame()
        if hasattr(protocol, "runs"):
            if budget is not None:
                protocol = protocol.at(budget)
            runs = protocol.runs()
        else:
            runs = list(protocol)
        return self.results(runs).frame()


# ====================================================================== results
@dataclass
class RunResult:
    """One finished run read from a store: its :class:`Run`, directory and metrics.

    ``metrics`` holds ``status`` (``"ok"`` or ``"diverged"``), ``final`` (the last
    evaluation of training), ``evaluation`` (scalar results of the evaluations), ``steps``,
    ``stopped``, ``elapsed_s``; the arrays are read on demand (:meth:`curve`,
    :meth:`evaluations`, :meth:`memory_function`, :meth:`perturbation_curve`), the model by
    :meth:`model`.
    """

    run: Run
    dir: Path
    metrics: dict

    @property
    def hash(self) -> str:
        """The run's hash as stored (its directory's name): that of the code that trained
        it, which is not ``run.hash`` in a process whose code differs
        (:func:`~rnnmem.experiments.code_digest`)."""
        return self.dir.name

    @property
    def code(self) -> str | None:
        """The :func:`~rnnmem.experiments.code_digest` of the code that made the run (from
        its provenance), or None for a run from before digests were recorded."""
        return _made_by(self.dir)

    def derived(self, name: str, params: Mapping, compute):
        """What an analysis computes from this run (a JSON-able value), computed once per
        store: kept in ``<store>/derived/<hash>/<name>-<key>.json`` with ``key`` the
        SHA-256 of ``params`` (everything the value depends on besides the run: lengths,
        sizes, a version the caller bumps when the computation changes) and the rnnmem
        version. A damaged or unreadable file is computed again; a store that cannot be
        written is only read (the value is then not kept)."""
        from .. import __version__

        text = json.dumps({"params": params, "rnnmem": __version__}, sort_keys=True,
                          separators=(",", ":"), default=str)
        key = hashlib.sha256(text.encode()).hexdigest()[:20]
        path = self.dir.parent.parent / "derived" / self.hash / f"{name}-{key}.json"
        try:
            return read_json(path)["value"]
        except (OSError, ValueError, KeyError, TypeError, RnnmemError):
            pass
        value = compute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"name": name, "params": params, "value": value})
        except (OSError, RnnmemError):
            pass
        return read_json(path)["value"] if path.is_file() else value

    @property
    def status(self) -> str:
        return self.metrics.get("status", "ok")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def curve(self) -> dict:
        """``{"history": [eval rows], "step": [...], "loss": [...]}``."""
        return read_json(self.dir / "curve.json")

    def evaluations(self) -> dict:
        p = self.dir / "evaluations.json"
        return read_json(p) if p.is_file() else {}

    def provenance(self) -> dict:
        return read_json(self.dir / "provenance.json")

    def memory_function(self):
        """``(t, M)`` as numpy arrays (the run must have evaluated it)."""
        import numpy as np

        mf = self.evaluations().get("memory_function")
        if mf is None:
            raise InvalidParameterError(f"run {self.run.short} did not evaluate "
                                        "evaluate.memory_function")
        return np.asarray(mf["t"], dtype=float), np.asarray(mf["values"], dtype=float)

    def perturbation_curve(self):
        """The :class:`rnnmem.numerics.perturbation.PerturbationCurve` of the run."""
        import numpy as np

        from ..numerics.perturbation import PerturbationCurve

        pc = self.evaluations().get("perturbation")
        if pc is None:
            raise InvalidParameterError(f"run {self.run.short} did not evaluate "
                                        "evaluate.perturbation")
        samples = np.array([[np.inf if v is None else v for v in row]
                            for row in pc["samples"]], dtype=float)
        return PerturbationCurve.from_samples(pc["betas"], samples, pc["e0"], pc.get("meta"))

    def dm_reports(self, which: str = "test") -> dict:
        """``{stack depth label: DMReport}`` of ``evaluate.dm`` (labels ``"sequence"``,
        ``"30"``, ..., or ``"none"`` for a model without a stack); ``which`` is ``"test"``
        (the test lengths) or ``"train"`` (the training lengths)."""
        from ..train.length_protocols import DMReport

        if which not in ("test", "train"):
            raise InvalidParameterError(f"which must be 'test' or 'train', got {which!r}")
        ev = self.evaluations().get("dm")
        if ev is None:
            raise InvalidParameterError(f"run {self.run.short} did not evaluate evaluate.dm")
        if "error" in ev:
            raise InvalidParameterError(f"run {self.run.short}: evaluate.dm failed "
                                        f"({ev['error']})")
        return {d: DMReport(**v[which]) for d, v in ev.items() if isinstance(v, Mapping)}

    def ns_report(self):
        """The :class:`rnnmem.train.NSReport` of ``evaluate.ns``."""
        from ..train.length_protocols_ns import NSReport

        ev = self.evaluations().get("ns")
        if ev is None:
            raise InvalidParameterError(f"run {self.run.short} did not evaluate evaluate.ns")
        if "error" in ev:
            raise InvalidParameterError(f"run {self.run.short}: evaluate.ns failed "
                                        f"({ev['error']})")
        return NSReport(**ev)

    def model(self, device: str = "cpu"):
        """The trained model, rebuilt from ``model.pt`` after its SHA-256 is checked."""
        from ..models.registry import load

        if not self.ok:
            raise InvalidParameterError(f"run {self.run.short} {self.status}: no model "
                                        f"({self.metrics.get('error', '')})")
        try:
            verify_manifest(self.dir, ["model.pt"])
        except CorruptFileError as exc:
            raise CorruptCheckpointError(str(exc), path=exc.path) from None
        return load(self.dir / "model.pt", device=device)

    def task(self, device: str = "cpu"):
        """The run's task, built and configured as in training (seed, batch size, dtype,
        temporal weighting), for analyses beyond the stored evaluations."""
        from ..models._device import resolve_dtype
        from ..train.tasks import build_task

        cfg = self.run.config
        extra = {"bptt": cfg.bptt} if cfg.bptt is not None else {}
        t = build_task(cfg.task, **dict(cfg.task_kwargs), **extra)
        dtype = resolve_dtype(cfg.dtype if cfg.dtype in ("float32", "float64") else "float32")
        t.configure(device=device, dtype=dtype, batch_size=cfg.batch_size, seed=cfg.seed,
                    temporal_weighting=cfg.temporal_weighting)
        return t

    def eval_set(self, max_samples: int | None = None, split: str | None = None):
        """The fixed :class:`rnnmem.train.perturb.EvalSet` of the run's held-out split
        (the one ``evaluate.perturbation`` uses, with ``max_samples = n_eval``)."""
        from ..train.perturb import EvalSet

        return EvalSet.from_task(self.task(), split, max_samples=max_samples)

    def row(self) -> dict:
        """One flat row: ``hash``, ``status``, dotted run fields, ``metrics.*``,
        ``eval.*`` (lists as JSON text)."""
        row: dict[str, Any] = {"hash": self.hash, "status": self.status}
        for k, v in flatten(self.run.to_dict(resources=False)).items():
            row[k] = _cell(v)
        for k, v in (self.metrics.get("final") or {}).items():
            row[f"metrics.{k}"] = _cell(v)
        for k, v in flatten(self.metrics.get("evaluation") or {}).items():
            row[f"eval.{k}"] = _cell(v)
        for k in ("steps", "stopped", "elapsed_s"):
            if k in self.metrics:
                row[k] = self.metrics[k]
        return row


def _pandas():
    try:
        import pandas
    except ImportError:
        from ..errors import RnnmemError

        raise RnnmemError("results as a table need pandas: pip install "
                          "'rnnmem[experiments]'") from None
    return pandas


def _cell(v):
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True)
    return float("nan") if v is None else v


class Results(list):
    """The finished runs of a protocol (a list of :class:`RunResult`), plus ``missing``
    (runs not in the store), ``failed`` (``{hash: message}`` of runs whose worker failed
    in this execution) and ``protocol``."""

    def __init__(self, items=(), *, missing=(), failed: Mapping | None = None,
                 store: RunStore | None = None, protocol=None, report=None):
        super().__init__(items)
        self.missing = list(missing)
        self.failed = dict(failed or {})
        self.store = store
        self.protocol = protocol
        self.report = report

    def frame(self):
        """A :class:`pandas.DataFrame`, one row per run (see :meth:`RunResult.row`)."""
        pd = _pandas()

        rows = [r.row() for r in self]
        df = pd.DataFrame(rows)
        if not rows:
            df = pd.DataFrame(columns=["hash", "status"])
        return df

    def by_hash(self) -> dict[str, RunResult]:
        return {r.hash: r for r in self}

    def get(self, run: Run) -> RunResult:
        for r in self:
            if r.hash == run.hash:
                return r
        raise InvalidParameterError(f"run {run.short} has no result here")

    def where(self, **fields) -> "Results":
        """The results whose run fields equal the given values (dotted paths as ``__``)."""
        out = [r for r in self
               if all(r.run.get(k.replace("__", ".")) == v for k, v in fields.items())]
        return Results(out, store=self.store, protocol=self.protocol)

    def analyse(self):
        """The protocol's registered analysis of these results."""
        if self.protocol is None:
            raise InvalidParameterError("results: no protocol to analyse with")
        return self.protocol.analyse(self)


def export_frame(df, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``df`` as CSV, JSON (records) or Parquet, atomically (format from ``fmt`` or
    the file's suffix)."""
    import io

    from ..files import atomic_write, atomic_writer

    path = Path(path)
    fmt = fmt or {".csv": "csv", ".json": "json", ".parquet": "parquet",
                  ".pq": "parquet"}.get(path.suffix.lower())
    if fmt == "csv":
        atomic_write(path, df.to_csv(index=False))
    elif fmt == "json":
        atomic_write(path, df.to_json(orient="records", indent=1) + "\n")
    elif fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        with atomic_writer(path) as fh:
            fh.write(buf.getvalue())
    else:
        raise InvalidParameterError(f"format: must be csv, json or parquet (or a file ending "
                                    f"in one), got {fmt or path.suffix!r}")
    return path
