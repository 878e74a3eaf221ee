"""data_prep: building LibriSpeech-SAM (chapter 1 of the ERSAM book).

Interface other chapters code against (keep it stable):

- ``build(DataConfig.for_scale(scale), run_dir)`` writes ``RUN_DIR/data`` (layout: :mod:`ersam_lib.core.rundir`):

  - ``manifest.parquet``: one row per mixture recipe: ``example_id``, ``split`` (``train``, ``val``, ``test``,
    and the real ``real_val``, ``real_test``, ``real_test_other``), ``source``, ``label`` (class index),
    ``count`` (max concurrent speakers), ``n_drawn``, ``placement`` (fill | sparse | none), ``speakers``,
    ``utt_ids`` (ids namespaced ``<source>:<id>``), ``offsets`` (samples), ``gains_db``, ``activity`` (JSON
    per-speaker 10-ms runs), ``overlap``, ``recipe`` (JSON: everything :func:`render.render_mixture` needs),
    ``seed``;
  - ``manifest.sha256``: content hash (same config and seed, same hash);
  - ``dataset.json``: ``classes``, ``class_set`` ("counts" | "levels"), ``K``, ``sample_rate``, ``counts``
    (per split and class), ``source`` (the primary one), ``source_fingerprint``, ``sources``, ``train_sources``,
    ``split_sources``, ``speakers`` (per split), ``manifest_sha256``, ``timings``; written last, it marks the data
    set done (``config.json`` marks the manifest done);
  - ``features/<kind>/`` with kind ``logmel`` (default, what chapters 2-6 train on) or ``stft`` (CountNet's |STFT|,
    n_fft 400, hop 160; on request: ``feature_kinds`` or :func:`build.add_features`).

- ``features.load_features(run_dir, split, kind="logmel") -> FeatureSet`` (any split the run built;
  ``features.feature_splits(run_dir)`` lists them) with ``.x`` float16 (N, F, T)
  (examples, bands, frames) standardised with train statistics, ``.y`` int64 (N,), ``.classes``, ``.meta`` (with
  ``key``, the content key that models trained on the features record); the arrays are verified on load;
  ``features.FeatureDataset(feature_set)`` yields (float32 tensor (F, T), int label). Models take (B, F, T).
- ``render.render_mixture(row, source) -> np.ndarray``: 5 s of 16-kHz float32 mono, deterministic;
  ``build.open_run_source(run_dir)`` and ``build.load_manifest(run_dir)`` give its arguments.
- ``rttm``: RTTM turns -> 5-s windows labelled with the max concurrent speaker count (chapter 6).
- ``build.build_tiny(run_dir)``: a few-second data set (K = 2) for other chapters' unit tests
  (``build_tiny(run_dir, real_source="librimini")`` adds tiny real splits).
- CLI: ``python -m data_prep build --source tts|librispeech|folder|librimini --root DIR --out RUN_DIR --scale smoke
  [--train-sources tts,librimini] [--real librimini|none]``;
  ``python -m data_prep download --root DIR --subset dev-clean`` (SHA-256 verified; needs internet).
"""

from __future__ import annotations

from .build import BuildReport, add_features, build, build_tiny, load_dataset_info, load_manifest, open_run_source
from .config import DataConfig, FeatureConfig, TtsConfig
from .features import FeatureDataset, FeatureSet, load_features
from .render import render_mixture

__all__ = ["BuildReport", "DataConfig", "FeatureConfig", "FeatureDataset", "FeatureSet", "TtsConfig", "add_features",
           "build", "build_tiny", "load_dataset_info", "load_features", "load_manifest", "open_run_source",
           "render_mixture"]
