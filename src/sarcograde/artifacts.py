"""Atomic writes, content hashes and the `run.json` provenance record of every output folder.

Every artifact is written to a temporary file beside its target and renamed into place, so an
interrupted run never leaves a half-written file that a later stage or a resume would trust.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import SarcogradeError
from .formats.records import FOLDER_RECORD

_UMASK = os.umask(0)
os.umask(_UMASK)

PACKAGES = ("sarcograde", "torch", "monai", "SimpleITK", "numpy", "scipy", "pandas",
            "scikit-learn", "lifelines", "matplotlib", "pydicom", "mirp")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the full extension (".nii.gz") so that writers that pick a format by name still work.
    ext = "".join(target.suffixes[-2:]) if target.suffix == ".gz" else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + ext, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # name the artifact, not its temporary file
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


LOCK_NAME = ".sarcograde.lock"


# Entries of a zip written by `zip_into_place` carry this date, so that the same files give the
# same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def temporary_folder_beside(out: Path) -> Iterator[Path]:
    """A new folder beside `out`, removed at the end unless it was renamed into place."""
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def folder_into_place(folder: Path, out: Path) -> None:
    """Rename the finished folder onto `out`; an earlier package there is moved aside first and
    removed after (rename cannot replace a folder that holds files)."""
    os.chmod(folder, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the output is a normal folder
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(folder, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(folder, out)


def zip_into_place(folder: Path, out: Path) -> None:
    """Zip the finished folder's files (sorted, fixed dates) and rename the zip onto `out`."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with path.open("rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold an exclusive lock on `folder/name` while a command writes its output there.

    Checked before any work: `folder` must be (or become) a writable folder, not a file, and no
    other command may hold the lock; each problem is a one-line `SarcogradeError`. The lock is
    an flock, so the kernel releases it when the process ends, even by kill -9 (the file stays
    and is reused); a finished command removes the file.
    """
    folder = Path(folder)
    path = folder / name
    if folder.exists() and not folder.is_dir():
        raise SarcogradeError("the output folder is an existing file", path=folder)
    created = not folder.exists()
    while True:
        handle = _open_lock_file(folder, path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SarcogradeError("another sarcograde command is writing here (it holds this "
                                  "lock); wait for it to finish", path=path) from None
        # The holder before us may have removed the file between our open and our lock.
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield folder
    finally:
        path.unlink(missing_ok=True)  # while still locked, so no one can hold a removed file
        handle.close()
        if created:  # a command refused before writing anything leaves no empty folder
            with contextlib.suppress(OSError):
                folder.rmdir()


def _open_lock_file(folder: Path, path: Path):
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK), "r+")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise SarcogradeError(f"the output folder is not writable ({reason})",
                                  path=folder) from None
        raise SarcogradeError(f"cannot create the output folder ({reason})", path=folder) from None


def write_bytes(target, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(target, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def write_csv(target, frame) -> None:
    """Write a pandas DataFrame as CSV, atomically, without the index."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    write_text(target, buf.getvalue())


def write_npz(target, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(target, buf.getvalue())


def save_figure(fig, target, dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    write_bytes(target, buf.getvalue())


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_path(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, sorted), e.g. a DICOM series."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def hash_config(config: Any) -> str:
    """A stable hash of a JSON-able configuration (key order does not matter)."""
    return hash_bytes(json.dumps(config, sort_keys=True, default=_json_default).encode())[:16]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """The `run.json` of an output folder: command, config, versions, input hashes, seed, times.

    Use as a context manager around a stage's work: it is written when the work ends, with
    ``status`` "finished" or "failed", so that a reader can tell a complete folder from a broken one.
    Add stage-specific results to ``record`` inside the block.
    """

    def __init__(self, out_dir, *, config: Any = None, inputs: dict[str, str] | None = None,
                 seed: int | None = None, name: str = FOLDER_RECORD,
                 argv: list[str] | None = None):
        self.out_dir = Path(out_dir)
        self.name = name  # e.g. "qa.run.json" where the folder is shared with other stages
        argv = sys.argv[1:] if argv is None else argv  # a stage may hide what names a patient
        self.record = {
            "command": " ".join(["sarcograde", *argv]),
            "config": config,
            "seed": seed,
            "inputs": {name: hash_path(p) for name, p in (inputs or {}).items()},
            "packages": package_versions(),
            "platform": platform.platform(),
            "start": now(),
        }

    def __enter__(self) -> "RunRecord":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.record["end"] = now()
        self.record["status"] = "finished" if exc_type is None else "failed"
        # After a failure (a full disk, say) the record is best effort: the failure is the news.
        with contextlib.suppress(*(() if exc_type is None else (OSError,))):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / self.name, self.record)
