"""The three run scales of the book, and everything each one sets, in one table (the README's table; chapter 0).

- ``smoke``: seconds to minutes per notebook on 2 CPU cores; what CI runs. Numbers are meaningless, paths are real.
- ``tutorial``: the default; the whole book in about an hour on a laptop CPU on the built-in offline speech.
- ``paper``: LibriSpeech, a GPU, the full search. Same code, bigger parameters.

:data:`SIZES` holds every per-scale setting of every stage: one entry per config, one dict per scale, each naming
the fields it sets. Each stage's ``dataclass`` config has a ``for_scale(scale, **overrides)`` constructor that is one
lookup into it (:func:`sizes`); an empty dict means the config's defaults, which are the tutorial's. Nested configs
(the data set's front end and voices, the search space's stages) are written as plain values here and built by their
``for_scale``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

__all__ = ["SCALES", "SIZES", "check_scale", "sizes"]

Scale = Literal["smoke", "tutorial", "paper"]
SCALES: tuple[str, ...] = ("smoke", "tutorial", "paper")

_STRATEGIES = ("random", "evolution", "regularized_evolution", "tpe", "nsga2")

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    # chapter 1, data_prep.config.DataConfig: classes, mixtures per class, real-speech splits, front end, voices
    "data": {
        "smoke": dict(max_count=3, per_class={"train": 40, "val": 10, "test": 10},
                      real_per_class={"real_val": 10, "real_test": 10, "real_test_other": 5},
                      features=dict(n_mels=32, hop_length=640), tts=dict(n_speakers=24, utts_per_speaker=4),
                      workers=1, shard_size=256),
        # espeak voices and real training speakers: each alone misses the other by 20+ points (chapter 3)
        "tutorial": dict(train_sources=("tts", "librimini")),
        "paper": dict(source="librispeech", per_class={"train": 2000, "val": 300, "test": 520},
                      features=dict(n_mels=64, hop_length=160)),
    },
    # chapter 6's generated conversation, data_prep.party.PartyConfig
    "party": {
        "smoke": dict(duration_s=60.0, max_present=3, scene_s=(5.0, 10.0)),
        "tutorial": dict(duration_s=300.0, max_present=5),
        "paper": dict(duration_s=600.0, max_present=8),
    },
    # chapter 2, ersam_lib.experiments.profiling.OperatorGrid: the operator configurations timed
    "operator_grid": {
        "smoke": dict(channels=(16, 64), kernels=(3, 9), seq_lens=(62, 250), strides=(1,), rnn_hidden=(32,),
                      attn_dims=(32,), linear_dims=(64,)),
        "tutorial": {},
        "paper": dict(channels=(16, 32, 48, 64, 96, 128, 192, 256, 384, 512), kernels=(1, 3, 5, 7, 9, 15, 25, 31),
                      seq_lens=(31, 62, 125, 250, 500, 1000, 2000), strides=(1, 2, 4)),
    },
    # chapter 2, ersam_lib.experiments.profiling.ProfilingConfig: architectures measured (its input: the run's data)
    "profiling": {
        "smoke": dict(n_train_archs=6, n_heldout_archs=4, rounds=1, n_runtime_train=4, n_runtime_heldout=3),
        "tutorial": {},
        "paper": dict(n_train_archs=200, n_heldout_archs=200, n_runtime_train=100, n_runtime_heldout=100),
    },
    # chapters 2, 5 and 6, ersam_lib.measure.export.TimingConfig: how one latency is measured
    "timing": {
        "smoke": dict(warmup=1, repeats=5, min_repeats=3, max_seconds=0.1),
        "tutorial": dict(warmup=5, repeats=30, min_repeats=7, max_seconds=0.6, min_seconds=0.05),
        "paper": dict(warmup=10, repeats=100, min_repeats=20, max_seconds=5.0, min_seconds=0.2),
    },
    # chapter 3, ersam_lib.models.teacher.TeacherConfig: tutorial 10 to 13 minutes on 2 cores, 8 epochs over 8 distinct
    # training sets (dynamic mixing, R = 7); paper: the pretrained wav2vec2 on a GPU
    "teacher": {
        "smoke": dict(epochs=2, batch_size=16, channels=(8, 16, 16), hidden=16, mix_rounds=1),
        "tutorial": dict(epochs=8, batch_size=64, channels=(24, 48, 96), hidden=96, mix_rounds=7),
        "paper": dict(kind="wav2vec2", epochs=20, batch_size=32, lr=5e-5),
    },
    # chapter 4, ersam_lib.models.space.SearchSpace: the stages (StageSpace fields in order: widths, kernels, strides,
    # depths, and for the context, expansions), the attention width and the 2-D stem. The tutorial's largest subnet
    # (~0.25 M params, ~25 MMACs at T = 250) trains on 2 CPU cores; its 3x3 stem has up to 16 channels x 10 bins
    "space": {
        "smoke": dict(encoder=(((8, 12), (3, 5), (1, 2), (1,)), ((12, 16), (3, 5), (2,), (1, 2))),
                      context=(((16, 24), (3, 5), (1,), (1, 2), (1, 2)), ((16, 24), (3, 5), (1, 2), (1, 2), (1, 2))),
                      attn_dim=8, stem=((2, 4), (3,), (1, 2), (1, 2))),
        "tutorial": dict(encoder=(((24, 32, 48), (3, 5, 7), (2, 4), (1,)), ((32, 48, 64), (3, 5, 7), (2,), (1, 2))),
                         context=(((48, 64), (3, 5, 9), (1,), (1, 2), (1, 2, 3)),
                                  ((48, 64, 80), (3, 5, 9), (1, 2), (1, 2), (1, 2, 3))),
                         attn_dim=32, stem=((4, 8, 16), (3,), (1, 2), (1,))),
        "paper": dict(encoder=(((32, 64, 96, 128), (3, 5, 7, 9), (1, 2, 4), (1, 2)),
                               ((64, 96, 128, 192), (3, 5, 7), (1, 2), (1, 2, 3))),
                      context=(((96, 128, 192), (3, 5, 9, 15), (1,), (2, 3, 4), (2, 3, 4)),
                               ((128, 192, 256), (3, 5, 9, 15), (1, 2), (2, 3, 4), (2, 3, 4)),
                               ((192, 256, 320), (3, 5, 9), (1, 2), (1, 2, 3), (2, 3, 4))),
                      attn_dim=64, stem=((8, 16, 24), (3, 5), (1, 2), (1, 2))),
    },
    # chapter 4, ersam_lib.training.train.TrainConfig: the tutorial fits the ablation (5 trainings) in half an hour
    "train": {
        "smoke": dict(epochs=2, batch_size=16, n_random=1, max_train_samples=64),
        "tutorial": dict(epochs=5, batch_size=64, n_random=1, max_train_samples=6000),
        "paper": dict(epochs=120, batch_size=256, n_random=2, lr=2e-3),
    },
    # chapter 4, ersam_lib.experiments.ablation.AblationConfig: the gate's thresholds (with the gate on every subnet of
    # the sandwich, entropy tau <= 0.8 still sends over 30 % of the training samples to the teacher at tutorial scale:
    # 84 % at 0.5, 61 % at 0.7, 37 % at 0.8, hence the grid) and the BN batches that score a subnet
    "ablation": {
        "smoke": dict(taus=(0.5,), n_bn_batches=4),
        "tutorial": dict(taus=(0.6, 0.8, 0.9), n_bn_batches=16),
        "paper": dict(taus=(0.6, 0.8, 0.9), n_bn_batches=16),
    },
    # chapter 5, ersam_lib.experiments.search.SearchBudget: evaluations per search (the tutorial runs each strategy for
    # three seeds, about 400 supernet scores in all); paper: Once-for-All's and Real et al.'s population sizes
    "search": {
        "smoke": dict(n_evals=6, population=4, parents=2, tournament=2, n_startup=3),
        "tutorial": dict(n_evals=30, population=10, parents=4, tournament=4, n_startup=8),
        "paper": dict(n_evals=1000, population=100, parents=25, tournament=25, n_startup=50),
    },
    # chapter 5, ersam_lib.experiments.frontier.FrontierConfig: strategies and seeds, finalists, baselines, peers,
    # runtimes (smoke measures through ExecuTorch only: every export costs seconds; paper adds the GP-based optimiser)
    "frontier": {
        "smoke": dict(n_seeds=1, n_finalists=2, baselines=("tcresnet8",), backends=("executorch",),
                      strategies=("random", "evolution", "tpe", "nsga2"), peers=("F-CRNN",), peer_backends=("eager",)),
        "tutorial": {},
        "paper": dict(n_finalists=8, strategies=_STRATEGIES + ("gp",)),
    },
    # chapter 5, ersam_lib.training.fit.FitConfig: the baselines' and finalists' supervised recipe
    "fit": {
        "smoke": dict(epochs=1, finetune_epochs=1, batch_size=16, max_train_samples=64),
        "tutorial": {},
        "paper": dict(epochs=60, finetune_epochs=10, batch_size=128, lr=2e-3, max_train_samples=None),
    },
    # chapter 6, ersam_lib.experiments.deploy.DeployConfig: windows that calibrate int8 and that check the front end
    "deploy": {
        "smoke": dict(n_calibration=160, n_check=16),
        "tutorial": {},
        "paper": dict(n_calibration=2048, n_check=256),
    },
}


def check_scale(scale: str) -> Scale:
    """Return ``scale`` if it is one of :data:`SCALES`, else raise ``ValueError`` naming the valid ones."""
    if scale not in SCALES:
        raise ValueError(f"unknown SCALE {scale!r}; expected one of {', '.join(SCALES)}")
    return scale  # type: ignore[return-value]


def sizes(config: str, scale: str) -> dict[str, Any]:
    """A copy of what :data:`SIZES` sets for ``config`` at ``scale`` (checked): what its ``for_scale`` passes on."""
    return copy.deepcopy(SIZES[config][check_scale(scale)])
