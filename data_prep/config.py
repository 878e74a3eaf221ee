"""Configuration of the LibriSpeech-SAM build (chapter 1): one dataclass per concern, sized by ``for_scale``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ersam_lib.core.scales import sizes

SPLITS: tuple[str, ...] = ("train", "val", "test")  # the training distribution and the primary source's test
REAL_SPLITS: tuple[str, ...] = ("real_val", "real_test", "real_test_other")  # real speech no training mixture uses
ALL_SPLITS: tuple[str, ...] = SPLITS + REAL_SPLITS
SOURCES: tuple[str, ...] = ("tts", "librispeech", "folder", "librimini")
# LibriCount's speaker splits of LibriSpeech: train from train-clean-360, validation dev-clean, test test-clean.
LIBRICOUNT_SUBSETS: dict[str, list[str]] = {"train": ["train-clean-360"], "val": ["dev-clean"], "test": ["test-clean"]}


@dataclass(frozen=True)
class TtsConfig:
    """The built-in offline speech corpus: ``n_speakers`` espeak-ng identities, ``utts_per_speaker`` sentences each."""

    n_speakers: int = 720
    utts_per_speaker: int = 8
    min_words: int = 8
    max_words: int = 18
    seed: int = 0

    def key(self) -> str:
        """Cache key: the config hash (same config, same corpus, reused by every run). Format 3: each block from a
        freshly loaded espeak-ng, each utterance with a seeded noise generator (format-1 corpora depended on the
        order the workers took the blocks, format-2 ones on the clock)."""
        blob = json.dumps(dataclasses.asdict(self) | {"format": 3}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (what chapters 2-6 train on) and CountNet's |STFT| (n_fft 400, hop 160)."""

    n_mels: int = 40
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 320
    stft_n_fft: int = 400
    stft_hop: int = 160

    def n_frames(self, n_samples: int) -> int:
        """Log-mel frames of ``n_samples`` of audio: a centred STFT has one frame per hop, plus one."""
        return 1 + int(n_samples) // self.hop_length


@dataclass
class DataConfig:
    """Everything that decides the data set; its JSON goes into ``dataset.json`` (chapter 1).

    ``per_class`` is the number of mixtures per class and split (balanced on the label). ``max_count`` is K.
    ``sparse_fraction`` of the speech mixtures use the sparse placement (random offsets with pauses), the rest
    LibriCount's fill-the-segment placement. Gains in dB are drawn per speaker from ``gain_db``; ``(0, 0)`` gives
    LibriCount's equal-power mix. ``snr_db`` adds background at a random SNR to speech mixtures (``None``: clean).

    Sources. ``source`` is the primary source: its speakers are cut into train/val/test (``test`` is always
    its own: synthetic voices at smoke and tutorial scale, LibriSpeech test-clean at paper scale). ``real_source``
    (the repository's LibriSpeech miniature, ``None`` to leave real speech out) gives the real evaluation splits
    ``real_val`` and ``real_test`` (train-clean-100 speakers cut by ``real_fractions``, of which only the first two
    parts may ever train) and ``real_test_other`` (its test-other speakers), sized by ``real_per_class``.
    ``train_sources`` says which sources the training distribution (``train`` and ``val``) draws from: synthetic
    only (``None``: ``(source,)``), real only, or both (the tutorial scale's default), each source then filling an equal
    share of every class (the training set keeps its size). Each row records its source; ids are namespaced
    ``<source>:<id>``. The real splits do not depend on ``train_sources``: the three choices are scored on the same real mixtures.
    """

    source: str = "tts"
    root: str | None = None
    subset_splits: dict[str, list[str]] | None = None  # LibriSpeech: split -> subsets (LibriCount's choice)
    train_sources: tuple[str, ...] | None = None  # None: (source,); else names among source and real_source
    real_source: str | None = "librimini"
    real_root: str | None = None  # None: $ERSAM_LIBRIMINI, else the repository's data/librispeech-mini
    real_per_class: dict[str, int] = field(
        default_factory=lambda: {"real_val": 100, "real_test": 200, "real_test_other": 100})
    real_fractions: tuple[float, float, float, float] = (0.6, 0.1, 0.15, 0.15)  # train, val, real_val, real_test
    class_set: str = "counts"
    max_count: int = 10
    per_class: dict[str, int] = field(default_factory=lambda: {"train": 910, "val": 100, "test": 200})
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    duration_s: float = 5.0
    sample_rate: int = 16_000
    sparse_fraction: float = 0.3
    gain_db: tuple[float, float] = (-10.0, 0.0)
    peak_dbfs: tuple[float, float] = (-6.0, -1.0)
    snr_db: tuple[float, float] | None = (10.0, 40.0)
    reverb_prob: float = 0.0
    vad_mode: int = 2
    on_error: str = "skip"
    feature_kinds: tuple[str, ...] = ("logmel",)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    workers: int = 2
    shard_size: int = 512
    seed: int = 0

    @classmethod
    def for_scale(cls, scale: str, **overrides) -> "DataConfig":
        """Sizes per scale: smoke (seconds), tutorial (>= 10k train mixtures, 720 speakers), paper (LibriSpeech).

        Every scale adds the real evaluation splits (``real_per_class``). A LibriSpeech source is split by subset
        as LibriCount (``LIBRICOUNT_SUBSETS``) unless ``subset_splits`` is given; a primary source that is the
        real source itself (``source="librimini"``) builds train/val/test from it alone (``real_source=None``).
        """
        table = sizes("data", scale)
        nested = {"features": FeatureConfig, "tts": TtsConfig}
        cfg = cls(**{k: nested[k](**v) if k in nested else v for k, v in table.items()})
        source = overrides.get("source", cfg.source)
        if source != cfg.source and "train_sources" not in overrides:  # the default mix names the default source
            overrides["train_sources"] = None
        if source == "librispeech" and "subset_splits" not in overrides:
            overrides["subset_splits"] = {k: list(v) for k, v in LIBRICOUNT_SUBSETS.items()}
        if source == cfg.real_source and "real_source" not in overrides:
            overrides["real_source"] = None
        return dataclasses.replace(cfg, **overrides)

    @classmethod
    def tiny(cls, **overrides) -> "DataConfig":
        """A data set that builds in a few seconds, for the unit tests of later chapters (K = 2).

        Synthetic only by default; ``real_source="librimini"`` adds tiny real splits (12 mixtures each).
        """
        cfg = cls(max_count=2, per_class={"train": 12, "val": 4, "test": 4}, real_source=None,
                  real_per_class={"real_val": 4, "real_test": 4, "real_test_other": 4},
                  features=FeatureConfig(n_mels=16, hop_length=800),
                  tts=TtsConfig(n_speakers=12, utts_per_speaker=3, min_words=6, max_words=10),
                  workers=1, shard_size=64)
        return dataclasses.replace(cfg, **overrides)

    @property
    def training_sources(self) -> tuple[str, ...]:
        """The sources of the ``train`` and ``val`` mixtures (``train_sources``, default the primary source)."""
        return tuple(self.train_sources) if self.train_sources else (self.source,)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this config builds, in manifest order."""
        real = [s for s in REAL_SPLITS if s in self.real_per_class] if self.real_source else []
        return SPLITS + tuple(real)

    def quota(self, split: str) -> int:
        """Mixtures per class of ``split``."""
        return self.per_class[split] if split in SPLITS else self.real_per_class[split]

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.real_source not in (None, "librimini"):
            raise ValueError(f"real_source must be 'librimini' or None, got {self.real_source!r}")
        if self.real_source is not None and self.real_source == self.source:
            raise ValueError(f"source and real_source are both {self.source!r}: set real_source=None to build "
                             f"train/val/test from it alone, or train_sources=({self.source!r},) with source='tts'")
        allowed = {self.source} | ({self.real_source} if self.real_source else set())
        picked = self.training_sources
        if not picked or len(set(picked)) != len(picked) or not set(picked) <= allowed:
            raise ValueError(f"train_sources must name distinct sources among {sorted(allowed)}, got {picked}")
        bad_real = set(self.real_per_class) - set(REAL_SPLITS)
        if bad_real or min(self.real_per_class.values(), default=1) < 1:
            raise ValueError(f"real_per_class takes positive counts for {REAL_SPLITS}, got {self.real_per_class}")
        if len(self.real_fractions) != 4 or abs(sum(self.real_fractions) - 1) > 1e-6 or min(self.real_fractions) < 0:
            raise ValueError(f"real_fractions must be 4 shares (train, val, real_val, real_test) summing to 1, "
                             f"got {self.real_fractions}")
        if self.class_set not in ("counts", "levels"):
            raise ValueError(f"class_set must be 'counts' or 'levels', got {self.class_set!r}")
        if self.max_count < 1:
            raise ValueError(f"max_count (K) must be >= 1, got {self.max_count}")
        if set(self.per_class) != set(SPLITS) or min(self.per_class.values()) < 1:
            raise ValueError(f"per_class needs a positive count for each of {SPLITS}, got {self.per_class}")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 numbers summing to 1, got {self.split_fractions}")
        if self.subset_splits is not None and set(self.subset_splits) != set(SPLITS):
            raise ValueError(f"subset_splits must name subsets for each of {SPLITS}, got {self.subset_splits}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
        bad = set(self.feature_kinds) - {"logmel", "stft"}
        if bad or not self.feature_kinds:
            raise ValueError(f"feature kinds must be logmel and/or stft, got {list(self.feature_kinds)}")
        if self.workers < 1 or self.shard_size < 1 or self.seed < 0:
            raise ValueError(f"need workers >= 1, shard_size >= 1 and seed >= 0; got workers={self.workers}, "
                             f"shard_size={self.shard_size}, seed={self.seed}")
        if self.sample_rate != 16_000:
            raise ValueError("the book works at 16 kHz; sources are resampled to it")
        if self.duration_s * 100 != int(self.duration_s * 100):
            raise ValueError("duration_s must be a multiple of 10 ms (the VAD frame)")

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> "DataConfig":
        d = dict(d)
        d["features"] = FeatureConfig(**d["features"])
        d["tts"] = TtsConfig(**d["tts"])
        for key in ("split_fractions", "gain_db", "peak_dbfs", "feature_kinds", "real_fractions"):
            if key in d:  # configs written before a field existed take its default
                d[key] = tuple(d[key])
        if d.get("train_sources") is not None:
            d["train_sources"] = tuple(d["train_sources"])
        if d.get("snr_db") is not None:
            d["snr_db"] = tuple(d["snr_db"])
        return cls(**d)
