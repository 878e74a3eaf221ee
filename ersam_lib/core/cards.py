"""The typed hand-offs between chapters: the model card and the chosen-models set (chapters 5 and 6).

:class:`ModelCard` is the one card format of the book. It sits beside every model file as ``<file stem>.json``: the
state dicts chapter 5 saves for its chosen models (``search/models/<name>.pt``), the programs chapter 6 deploys
(``deploy/<name>_<precision>.pte`` and ``.onnx``), and the ``torch.export`` bundles of the meter (``.pt2``). Its
fields mean one thing whatever the file: ``input`` is what the file's forward takes (one call, batch included:
standardised log-mel features for a state dict, raw audio for a program), ``features`` is the front end the network
was trained on (chapter 1's log-mel recipe and statistics), and ``sha256`` names the exact bytes it describes, checked
before anything reads them (:meth:`ModelCard.load`).

:class:`Chosen` is what chapter 5 chose (``search/chosen.json``): the model within the default energy budget, the
most accurate searched one, and the baselines; chapter 6 picks from it. :class:`Headline` is what the run achieved
in the end (``deploy/headline.json``, written by chapter 6): the book's landing page shows it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import ArtifactError, atomic_write_json, sha256_file
from .rundir import damaged, read_run_json, run_file

__all__ = ["CARD_KIND", "CHOICES", "CardError", "Chosen", "FORMATS", "Headline", "ModelCard", "card_path", "claim",
           "identity"]

CARD_KIND = "ersam-model-card"
CARD_VERSION = 2
# File suffix -> the card's "format" (what reads it).
FORMATS: dict[str, str] = {".pt": "state_dict", ".pt2": "torch.export", ".pte": "executorch", ".onnx": "onnx"}
CHOICES = ("budget", "most_accurate")


class CardError(ArtifactError):
    """A model file without a usable card, or one that is not the file its card describes; one line naming it."""


def card_path(path: str | os.PathLike) -> Path:
    """The JSON card beside a model file: ``model.pte`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


@dataclass(frozen=True)
class ModelCard:
    """What a model file is: the bytes it holds (``file``, ``format``, ``sha256``), what it takes (``input``) and
    returns (logits over ``classes``), the front end it was trained on (``features``), where it comes from
    (``name``, ``architecture``, ``manifest_sha256``) and what it scored and costs (``metrics``, ``report``,
    ``costs``). ``normalizes``: the program brings each window to the training level itself (chapter 6's do)."""

    file: str
    format: str
    sha256: str
    classes: tuple[str, ...]
    input: Mapping[str, Any]
    name: str = ""
    architecture: Mapping[str, Any] = field(default_factory=dict)
    class_set: str = "counts"
    manifest_sha256: str | None = None
    features: Mapping[str, Any] | None = None
    sample_rate: int = 16_000
    window_s: float = 5.0
    batch: int = 1
    normalizes: bool = False
    precision: str | None = None
    runtime: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    report: Mapping[str, Any] = field(default_factory=dict)
    costs: Mapping[str, Any] | None = None
    torch: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    # -- writing
    @classmethod
    def describe(cls, path: str | os.PathLike, **fields: Any) -> ModelCard:
        """The card of the file ``path`` as it is now (:func:`identity`), with ``fields``."""
        return cls(**identity(path) | fields)

    def to_json(self) -> dict[str, Any]:
        return {"kind": CARD_KIND, "version": CARD_VERSION} | json.loads(json.dumps(dataclasses.asdict(self)))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the card beside its file in ``folder`` atomically (after :meth:`claim`); return its path."""
        target = Path(folder) / self.file
        return atomic_write_json(claim(target), self.to_json())

    # -- reading
    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelCard:
        """The card of the model file ``path``, checked: a card of this book, of this very file (name, format and
        SHA-256), before anything reads the file. :class:`CardError` names the file otherwise."""
        path = Path(path)
        data = _read_card(path)
        if data.get("file") != path.name:
            raise CardError(f"model card {card_path(path)} is the card of {data.get('file')!r}, not of {path.name}")
        if data.get("format") != FORMATS.get(path.suffix):
            raise CardError(f"model card {card_path(path)} describes a {data.get('format')!r} file, but {path.name} "
                            f"is not one")
        if sha256_file(path) != data.get("sha256"):
            raise CardError(f"{path} does not match the SHA-256 in its card {card_path(path).name} (damaged or "
                            f"replaced since it was written)")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as e:
            raise CardError(f"model card {card_path(path)} lacks what a card holds ({e})") from None


def identity(path: str | os.PathLike) -> dict[str, str]:
    """What a card says of the bytes of the model file ``path`` as they are now: its name, its format (from the
    suffix), its SHA-256, and the torch that wrote it."""
    import torch

    path = Path(path)
    if path.suffix not in FORMATS:
        raise CardError(f"a model file is a {'/'.join(FORMATS)} file, got {path}")
    if not path.is_file():
        raise CardError(f"write the model file {path} before its card")
    return {"file": path.name, "format": FORMATS[path.suffix], "sha256": sha256_file(path), "torch": torch.__version__}


def claim(path: str | os.PathLike) -> Path:
    """The card path of the model file ``path``, after checking that the card there (if any) is not another file's
    (two files must not share one card); call it before writing the file."""
    path = Path(path)
    other = None
    try:
        other = json.loads(card_path(path).read_text(encoding="utf-8")).get("file")
    except (OSError, ValueError, AttributeError):  # no card yet, or not one of ours: it may be overwritten
        pass
    if other not in (None, path.name):
        raise CardError(f"{card_path(path)} is the card of {other}: give {path.name} a name of its own")
    return card_path(path)


def _read_card(path: Path) -> dict[str, Any]:
    card_file = card_path(path)
    if not card_file.is_file():
        raise CardError(f"{path} has no card {card_file.name} beside it: not a model file of this book")
    try:
        data = json.loads(card_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CardError(f"model card {card_file} is not valid JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("kind") != CARD_KIND or data.get("version") != CARD_VERSION:
        raise CardError(f"model card {card_file} does not describe a model of this book (kind {CARD_KIND!r}, "
                        f"version {CARD_VERSION})")
    missing = {"file", "format", "sha256", "classes", "input"} - set(data)
    if missing:
        raise CardError(f"model card {card_file} lacks {sorted(missing)}")
    if not isinstance(data["classes"], list) or not isinstance(data["input"], dict):
        raise CardError(f"model card {card_file}: classes must be a list and input an object")
    return data


@dataclass(frozen=True)
class Chosen:
    """What chapter 5 chose for chapter 6 (``search/chosen.json``): the searched model within the default energy
    budget (``None`` when none fits it as measured), the most accurate searched one, and the baselines."""

    budget: str | None
    most_accurate: str | None
    baselines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(self.baselines))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {role: getattr(self, role) for role in CHOICES if getattr(self, role) is not None}
        return out | {"baselines": list(self.baselines)}

    def save(self, run_dir: str | os.PathLike) -> Path:
        return atomic_write_json(run_file(run_dir, "chosen"), self.to_json())

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Chosen:
        data = read_run_json(run_dir, "chosen")  # missing or damaged: the error names chapter 5's command
        return cls(data.get("budget"), data.get("most_accurate"), tuple(data.get("baselines", ())))

    def pick(self, role: str) -> tuple[str, str]:
        """``(name, role)`` of the model to deploy in ``role`` (``budget`` or ``most_accurate``).

        ``budget`` is absent when no finalist's *measured* energy fits the default budget (the search holds the
        budget on the cost model's prediction; a loaded host can measure more): then ``most_accurate`` stands in, and
        the returned role says so."""
        if role not in CHOICES:
            raise ValueError(f"MODEL must be one of {CHOICES}, got {role!r}")
        for candidate in (role, *CHOICES):
            if getattr(self, candidate) is not None:
                return getattr(self, candidate), candidate
        raise ValueError("chapter 5 chose no searched model (chosen.json has neither 'budget' nor 'most_accurate')")

    def names(self) -> list[str]:
        """Every chosen model once: the searched ones first, then the baselines."""
        return list(dict.fromkeys([n for n in (self.budget, self.most_accurate) if n] + list(self.baselines)))


@dataclass(frozen=True)
class Headline:
    """The run's headline results (chapter 6 writes ``deploy/headline.json``; the book's landing page shows them):
    the deployed model and chapter 5's role for it, its accuracy in float and int8 on the synthetic and real test
    splits, the int8 ExecuTorch program's latency per 5-s window (one thread, chapter 2's protocol), size and peak
    memory, the streaming meter's speed, and its scores on the annotated conversation (RTTM)."""

    model: str
    role: str
    test_acc: float
    int8_test_acc: float
    real_test_acc: float | None
    int8_real_test_acc: float | None
    latency_ms: float
    size_kb: float
    peak_mb: float
    meter_speed_x: float
    rttm_accuracy: float | None
    rttm_mae: float | None

    def save(self, run_dir: str | os.PathLike) -> Path:
        return atomic_write_json(run_file(run_dir, "headline"), dataclasses.asdict(self))

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Headline:
        """The headline chapter 6 wrote; missing or damaged, the error names the file and chapter 6's command."""
        path = run_file(run_dir, "headline")
        data = read_run_json(run_dir, "headline")
        try:
            return cls(**data)
        except TypeError as e:
            raise damaged(path, run_dir, "deploy", f"is not the headline this book writes ({e})") from None
