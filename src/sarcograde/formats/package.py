"""The model package written by `sarcograde export` (docs/artifacts.md): trained models to share,
as a folder or one zip file of the same files.

    PKG/model.json                   what the package is (format, version), its sequences' settings
                                     and folds, the fusion, the operating threshold, the training
                                     cohort's counts, the metrics, the versions, the recalibration
                                     for a site (`sarcograde recalibrate`, if any), and the SHA-256
                                     of every other file; `checksum` is the SHA-256 of its own
                                     content
    PKG/MODEL_CARD.md                the model card, in words
    PKG/<SEQ>/fold_XX.safetensors    each fold model's fp32 weights (safetensors: no pickle, so
                                     loading runs no code)
    PKG/<SEQ>/fold_XX.onnx           with `export --onnx`: the fold model as an ONNX graph
                                     (outputs: logits and the signed Grad-CAM map), for the
                                     ONNX engines and inference servers

`write_package` writes it atomically (a temporary folder or file beside it, renamed at the end);
`read_package` is its one reader: it refuses an unknown format version, an edited model.json, a
file whose SHA-256 differs from model.json's, a missing file and a file the package does not
list, each in one line naming the file, and builds each sequence's ensemble from the weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from ..artifacts import folder_into_place, temporary_folder_beside, zip_into_place
from ..errors import SarcogradeError
from .common import first_line

FORMAT = "sarcograde-model-package"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_CARD = "MODEL_CARD.md"
RECALIBRATION = "recalibration"  # model.json's block of `sarcograde recalibrate`
WEIGHTS_SUFFIX = ".safetensors"
ONNX_SUFFIX = ".onnx"
RERUN = "export"
# A zip's entries carry this date, so that the same models give the same bytes.
_CHUNK = 1 << 20
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def weights_name(sequence: str, fold: str) -> str:
    """A fold model's weights file in the package: `<SEQ>/fold_XX.safetensors`."""
    return f"{sequence}/{fold}{WEIGHTS_SUFFIX}"


def onnx_name(sequence: str, fold: str) -> str:
    """A fold model's ONNX graph in the package: `<SEQ>/fold_XX.onnx`."""
    return f"{sequence}/{fold}{ONNX_SUFFIX}"


def content_checksum(document: dict) -> str:
    """SHA-256 of model.json's content without its `checksum` (keys sorted, compact), so that an
    edit of any value is seen whatever the file's spacing."""
    content = {k: v for k, v in document.items() if k != "checksum"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def absolute_paths(value: Any) -> list[str]:
    """Every text in a JSON-like value that is an absolute path (of the machine that made it)."""
    if isinstance(value, dict):
        return [p for v in [*value.keys(), *value.values()] for p in absolute_paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in absolute_paths(v)]
    return [value] if isinstance(value, str) and _ABSOLUTE.match(value) else []


# ------------------------------------------------------------------------------- writer

def write_package(out: str | Path, document: dict,
                  weights: Iterable[tuple[str, dict]], card: Callable[[dict], str],
                  as_zip: bool = False, graphs: Iterable[tuple[str, bytes]] = ()) -> dict:
    """Write the package to `out` (a folder, or one zip file with `as_zip`) and return its
    model.json.

    `document` is model.json without `id`, `files` and `checksum`; `weights` yields (file name,
    state dict) one fold at a time (saved as fp32 safetensors, so at most one fold's bytes are
    held); `graphs` yields (file name, ONNX bytes) likewise; `card` renders MODEL_CARD.md from
    the finished document (with its `id`). An existing
    `out` is replaced only if it is a package (`is_package`), else refused.
    """
    out = Path(out)
    _check_replaceable(out, as_zip)
    leaked = absolute_paths(document)
    if leaked:  # the package travels: no path of this machine in it
        raise SarcogradeError(f"model.json would hold the path {leaked[0]!r}; nothing was "
                              "written", path=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with temporary_folder_beside(out) as folder:
        files = {name: _save_weights(folder / name, state) for name, state in weights}
        for name, graph in graphs:
            (folder / name).write_bytes(graph)
            files[name] = hashlib.sha256(graph).hexdigest()
        # plain JSON values only (numpy numbers become Python ones; NaN is refused)
        document = json.loads(json.dumps(document, allow_nan=False, default=_plain))
        document["id"] = content_checksum({"settings": document, "weights": files})[:16]
        card_bytes = card(document).encode("utf-8")
        (folder / MODEL_CARD).write_bytes(card_bytes)
        files[MODEL_CARD] = hashlib.sha256(card_bytes).hexdigest()
        document["files"] = dict(sorted(files.items()))
        document["checksum"] = content_checksum(document)
        (folder / MODEL_JSON).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        if as_zip:
            zip_into_place(folder, out)
        else:
            folder_into_place(folder, out)
    return document


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # a numpy number
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _save_weights(path: Path, state: dict) -> str:
    """One fold's state dict as fp32 safetensors; returns the file's SHA-256."""
    import torch
    from safetensors.torch import save

    tensors = {key: (value.detach().to(torch.float32) if value.is_floating_point()
                     else value.detach()).contiguous().clone()
               for key, value in state.items()}
    data = save(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def package_file(path: str | Path) -> Path:
    """The file whose hash identifies a package's content, as run.json records it: the
    folder's model.json (it holds every other file's SHA-256), or the zip itself."""
    path = Path(path)
    return path / MODEL_JSON if path.is_dir() else path


def is_package(path: str | Path) -> bool:
    """True for a folder or zip whose model.json says it is a model package (not verified)."""
    path = Path(path)
    try:
        if path.is_dir():
            text = (path / MODEL_JSON).read_text(encoding="utf-8")
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                text = archive.read(MODEL_JSON).decode("utf-8")
        else:
            return False
        document = json.loads(text)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def _check_replaceable(out: Path, as_zip: bool) -> None:
    if not out.exists() or (out.is_dir() and not as_zip and not any(out.iterdir())):
        return
    form = "a file" if out.is_file() else "a folder"
    if out.is_dir() == as_zip:
        wanted = "one file (--zip)" if as_zip else "a folder"
        raise SarcogradeError(f"--out is {form}, and the package would be {wanted}; choose "
                              "another --out", path=out)
    if not is_package(out):
        raise SarcogradeError(f"--out is {form} that is not a model package; choose a new --out "
                              "(only an earlier package is replaced)", path=out)


# ------------------------------------------------------------------------------- reader

@dataclass(frozen=True)
class Fold:
    """One fold model of a sequence: its run's fold name, repeat, fold and best epoch."""

    name: str
    repeat: int
    fold: int
    best_epoch: int
    weights: str  # the weights file's name in the package
    onnx: str | None = None  # its ONNX graph's name in the package (`export --onnx`)


@dataclass(frozen=True)
class SequenceModel:
    """One sequence's ensemble as the package holds it (model.json's `models[SEQ]`)."""

    sequence: str
    name: str                 # PKG-<SEQ>
    preprocess: dict          # preprocess's settings the cache must have
    model: dict               # the network (model.build_model's config)
    input: dict               # how cached slices become network input (model.input_meta)
    folds: tuple[Fold, ...]
    settings: dict            # the whole model.json block


class Package:
    """A model package that `read_package` verified: model.json's content, and its files read
    from the folder or the zip (each checked again against its SHA-256 when read)."""

    def __init__(self, path: Path, document: dict, source: "_Source"):
        self.path = path
        self.document = document
        self._source = source
        shown = source.shown(MODEL_JSON)
        sequences, threshold = document.get("sequences"), document.get("threshold")
        if not (isinstance(sequences, list) and sequences
                and all(isinstance(s, str) for s in sequences)):
            raise SarcogradeError("model.json: 'sequences' is not a list of sequence names",
                                  path=shown)
        value = threshold.get("value") if isinstance(threshold, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise SarcogradeError("model.json: 'threshold' has no value in [0, 1]", path=shown)
        self.models = {seq: _sequence_model(seq, document, shown) for seq in sequences}
        self.recalibration = _recalibration(document, shown)

    @property
    def id(self) -> str:
        return self.document["id"]

    @property
    def sequences(self) -> list[str]:
        return list(self.document["sequences"])

    @property
    def threshold(self) -> float:
        """The operating threshold: high grade when p_high > threshold."""
        return float(self.document["threshold"]["value"])

    @property
    def fusion(self) -> dict | None:
        """The fusion model (fusion fit's model.json), or None for a package of one sequence."""
        return self.document.get("fusion")

    def model(self, sequence: str) -> "SequenceModel":
        """The package's model of `sequence`; a one-line error where it has none."""
        if sequence not in self.models:
            raise SarcogradeError(f"the model package has no {sequence} model (it has "
                                  f"{', '.join(self.sequences)})", path=self.path)
        return self.models[sequence]

    @property
    def card(self) -> str:
        return self.read(MODEL_CARD).decode("utf-8")

    def shown(self, name: str) -> Path:
        """How a file of the package is named in messages (inside the zip, or in the folder)."""
        return self._source.shown(name)

    def read(self, name: str) -> bytes:
        """A file of the package, verified against model.json's SHA-256."""
        data = self._source.read(name)
        if hashlib.sha256(data).hexdigest() != self.document["files"][name]:
            raise _changed(self._source.shown(name))
        return data

    def state_dicts(self, sequence: str) -> Iterator[tuple[Fold, dict]]:
        """Each fold of `sequence` with its weights (CPU tensors), one at a time."""
        from safetensors.torch import load

        for fold in self.models[sequence].folds:
            try:
                yield fold, load(self.read(fold.weights))
            except SarcogradeError:
                raise
            except Exception as exc:  # a file the export wrote, damaged since: say which
                raise SarcogradeError(f"not readable safetensors weights ({first_line(exc)})",
                                      path=self._source.shown(fold.weights)) from None

    def onnx_graphs(self, sequence: str) -> list[bytes] | None:
        """Each fold's ONNX graph of `sequence` (verified), or None if exported without them."""
        folds = self.models[sequence].folds
        if any(fold.onnx is None for fold in folds):
            return None
        return [self.read(fold.onnx) for fold in folds]


def read_package(path: str | Path) -> Package:
    """The package at `path` (its folder or its zip file), verified: format and version,
    model.json's own checksum, every listed file's SHA-256, no file the package does not list."""
    path = Path(path)
    source = _Source.of(path)
    shown = source.shown(MODEL_JSON)
    try:
        document = json.loads(source.read(MODEL_JSON).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SarcogradeError(f"corrupt JSON ({first_line(exc)}); re-export the package "
                              f"(`sarcograde {RERUN}`)", path=shown) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SarcogradeError(f"not a sarcograde model package (its format is not {FORMAT})",
                              path=shown)
    version = document.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        from .. import __version__

        made_by = (document.get("versions") or {}).get("sarcograde", "another version")
        raise SarcogradeError(f"model package format version {version!r} is unknown to "
                              f"sarcograde {__version__}, which reads version {FORMAT_VERSION}; "
                              f"the package was exported by sarcograde {made_by}", path=shown)
    if document.get("checksum") != content_checksum(document):
        raise SarcogradeError("model.json was changed after export (its checksum does not match "
                              "its content); use the package as exported", path=shown)
    files = document.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise SarcogradeError("model.json lists no files with their SHA-256", path=shown)
    listed = set(files) | {MODEL_JSON}
    for name in sorted(source.names()):
        if name not in listed:
            raise SarcogradeError("file not part of the package (model.json does not list it); "
                                  "remove it or use the package as exported",
                                  path=source.shown(name))
    for name, digest in sorted(files.items()):
        if source.digest(name) != digest:
            raise _changed(source.shown(name))
    return Package(path, document, source)


def _changed(shown: Path) -> SarcogradeError:
    return SarcogradeError("SHA-256 differs from model.json's: the file was changed or damaged "
                           "after export; use the package as exported", path=shown)


def _recalibration(document: dict, shown: Path) -> dict | None:
    """model.json's recalibration for a site (`sarcograde recalibrate`), or None."""
    block = document.get(RECALIBRATION)
    if block is None:
        return None
    values = [block.get(k) for k in ("intercept", "slope")] if isinstance(block, dict) else []
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v) for v in values):
        raise SarcogradeError(f"model.json: '{RECALIBRATION}' has no finite intercept and slope",
                              path=shown)
    return block


def _sequence_model(sequence: str, document: dict, shown: Path) -> SequenceModel:
    try:
        block = document["models"][sequence]
        folds = tuple(Fold(name=str(f["name"]), repeat=int(f["repeat"]), fold=int(f["fold"]),
                           best_epoch=int(f["best_epoch"]), weights=str(f["weights"]),
                           onnx=str(f["onnx"]) if f.get("onnx") else None)
                      for f in block["folds"])
        model = SequenceModel(sequence=sequence, name=str(block["name"]),
                              preprocess=dict(block["preprocess"]), model=dict(block["model"]),
                              input=dict(block["input"]), folds=folds, settings=block)
    except (KeyError, TypeError, ValueError) as exc:
        raise SarcogradeError(f"model.json: sequence {sequence} lacks or garbles {exc}; "
                              f"re-export the package", path=shown) from None
    if not folds:
        raise SarcogradeError(f"model.json: sequence {sequence} has no fold model", path=shown)
    unlisted = [name for f in folds for name in (f.weights, f.onnx)
                if name is not None and name not in document["files"]]
    if unlisted:
        raise SarcogradeError(f"model.json: {unlisted[0]} is not among its files",
                              path=shown)
    return model


class _Source:
    """The package's files: a folder's, or a zip's entries (never extracted)."""

    def __init__(self, path: Path, archive: bool):
        self.path = path
        self.archive = archive

    @classmethod
    def of(cls, path: Path) -> "_Source":
        if path.is_dir():
            if not (path / MODEL_JSON).is_file():
                raise SarcogradeError(f"not a model package: no {MODEL_JSON} (written by "
                                      f"`sarcograde {RERUN}`)", path=path)
            return cls(path, archive=False)
        if not path.exists():
            raise SarcogradeError("model package not found", path=path)
        if not zipfile.is_zipfile(path):
            raise SarcogradeError("not a model package: neither a folder nor a zip file",
                                  path=path)
        source = cls(path, archive=True)
        if MODEL_JSON not in source.names():
            raise SarcogradeError(f"not a model package: the zip holds no {MODEL_JSON} at its "
                                  "top", path=path)
        return source

    def shown(self, name: str) -> Path:
        """How a file is named in messages: PKG/T1/fold_00.safetensors, or pkg.zip/... ."""
        return self.path / name

    def names(self) -> list[str]:
        """Every file, as a relative POSIX name."""
        if self.archive:
            try:
                with zipfile.ZipFile(self.path) as archive:
                    names = [i.filename for i in archive.infolist() if not i.is_dir()]
            except (OSError, zipfile.BadZipFile) as exc:
                raise SarcogradeError(f"unreadable zip ({first_line(exc)})",
                                      path=self.path) from None
        else:
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                     if p.is_file()]
        for name in names:
            parts = PurePosixPath(name).parts
            if PurePosixPath(name).is_absolute() or ".." in parts:
                raise SarcogradeError(f"file name {name!r} leaves the package", path=self.path)
        return names

    def _chunks(self, name: str) -> Iterator[bytes]:
        """The file's bytes in chunks (weights are large); a one-line error naming it."""
        try:
            if self.archive:
                with zipfile.ZipFile(self.path) as archive, archive.open(name) as handle:
                    yield from iter(lambda: handle.read(_CHUNK), b"")
            else:
                with self.path.joinpath(*name.split("/")).open("rb") as handle:
                    yield from iter(lambda: handle.read(_CHUNK), b"")
        except (FileNotFoundError, KeyError):
            raise SarcogradeError("missing from the package (model.json lists it)",
                                  path=self.shown(name)) from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise SarcogradeError(f"unreadable ({first_line(exc)})",
                                  path=self.shown(name)) from None

    def read(self, name: str) -> bytes:
        return b"".join(self._chunks(name))

    def digest(self, name: str) -> str:
        digest = hashlib.sha256()
        for chunk in self._chunks(name):
            digest.update(chunk)
        return digest.hexdigest()

