"""A long annotated "party" recording: speakers join and leave over minutes, with its RTTM (chapter 6).

The streaming meter is scored on recordings whose true count changes over time. Real annotated conversations
(AMI, VoxConverse, ...) are not offline, so chapter 6 generates one from a speech source, mixed like chapter 1's
mixtures (:mod:`data_prep.render`): each speaker's track brought to unit power and given a random gain, summed,
background noise at a random SNR, the whole peak-normalised.

The guest list: the recording is cut into scenes of random length; at each scene change one guest arrives or
leaves, steering the number present along a rise-and-fall curve (an empty room at the start, the most guests,
``max_present``, in the middle, few towards the end) with random detours. A present guest talks in VAD-trimmed
utterances separated by short pauses, and sometimes listens for a few seconds. The speaker turns written to the
RTTM are the VAD activity of the placed stretches on the 10-ms grid, the same activity chapter 1 labels its
mixtures with, so :func:`data_prep.rttm.window_counts` of the RTTM gives the chapter-1 label of every window.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from ersam_lib.core.io import atomic_path, atomic_write_json, atomic_write_text
from ersam_lib.core.scales import sizes

from .render import SAMPLE_RATE, background
from .rttm import COLUMNS, FRAME_S, format_rttm
from .sources.base import SourceError, SpeechSource
from .vad import FRAME, to_runs, trim_bounds


@dataclass(frozen=True)
class PartyConfig:
    """How a party recording is generated (chapter 6). Durations in seconds, levels in dB."""

    duration_s: float = 300.0
    max_present: int = 4
    scene_s: tuple[float, float] = (10.0, 30.0)
    pause_s: tuple[float, float] = (0.1, 1.0)
    listen_prob: float = 0.25
    listen_s: tuple[float, float] = (2.0, 8.0)
    gain_db: tuple[float, float] = (-10.0, 0.0)
    snr_db: tuple[float, float] | None = (15.0, 35.0)
    peak_dbfs: float = -3.0
    vad_mode: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s < 10 or self.duration_s * 100 != int(self.duration_s * 100):
            raise ValueError(f"duration_s must be >= 10 s and a multiple of 10 ms, got {self.duration_s}")
        if self.max_present < 1:
            raise ValueError(f"max_present must be >= 1, got {self.max_present}")
        for name in ("scene_s", "pause_s", "listen_s", "gain_db"):
            lo, hi = getattr(self, name)
            if lo > hi or (name != "gain_db" and lo <= 0):
                raise ValueError(f"{name} must be a (low, high) range of positive numbers, got {(lo, hi)}")
        if not 0 <= self.listen_prob <= 1:
            raise ValueError(f"listen_prob must be in [0, 1], got {self.listen_prob}")

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> PartyConfig:
        """``smoke``: one minute, up to 3 guests; ``tutorial``: five minutes, up to 5; ``paper``: ten, up to 8."""
        return cls(**(sizes("party", scale) | overrides))


@dataclass
class Party:
    """A generated recording: 16-kHz mono ``audio``, speaker ``turns`` (RTTM columns), the guest list
    ``presence`` (speaker, join_s, leave_s) and the per-speaker ``activity`` (speakers, 10-ms frames)."""

    name: str
    audio: np.ndarray
    turns: pd.DataFrame
    presence: pd.DataFrame
    activity: np.ndarray
    speakers: list[str]
    config: PartyConfig

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def guest_list(cfg: PartyConfig, speakers: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """Who is in the room when: rows (speaker, join frame, leave frame) on the 10-ms grid."""
    n_frames = int(round(cfg.duration_s / FRAME_S))
    # Enough scenes to rise to max_present and fall back: shorten them if the recording is short.
    hi = min(cfg.scene_s[1], cfg.duration_s / (2 * cfg.max_present + 2))
    lo = min(cfg.scene_s[0], hi)
    present: dict[str, int] = {}
    rows: list[tuple[str, int, int]] = []
    t = 0
    while t < n_frames:
        length = int(rng.uniform(lo, hi) / FRAME_S)
        mid = min(t + length / 2, n_frames) / n_frames
        target = int(round(cfg.max_present * np.sin(np.pi * mid)))
        step = np.sign(target - len(present)) if t > 0 else 0
        if step == 0 and 0 < len(present) < cfg.max_present and rng.random() < 0.5:
            step = int(rng.choice([-1, 1]))  # a detour: one more guest arrives, or one leaves early
        if step > 0:
            absent = [s for s in speakers if s not in present]
            present[absent[int(rng.integers(len(absent)))]] = t
        elif step < 0:
            gone = sorted(present)[int(rng.integers(len(present)))]
            rows.append((gone, present.pop(gone), t))
        t += length
    rows += [(s, a, n_frames) for s, a in present.items()]
    return pd.DataFrame(sorted(rows, key=lambda r: (r[1], r[0])), columns=["speaker", "join", "leave"])


def _utterances(source: SpeechSource, utts: list[str], cfg: PartyConfig, rng: np.random.Generator,
                join: int, leave: int) -> list[tuple[str, int, int, int]]:
    """(utt_id, source frame, n frames, destination frame) of one stay: trimmed utterances with pauses between."""
    out = []
    pos = join + int(rng.uniform(0, cfg.pause_s[1]) / FRAME_S)
    while pos < leave:
        for _ in range(20):
            utt = utts[int(rng.integers(len(utts)))]
            bounds = trim_bounds(source.vad(utt, cfg.vad_mode))
            if bounds is not None:
                break
        else:
            raise SourceError(f"no speech found by the VAD in 20 draws of utterances of {utts[0]}'s speaker")
        n = min(bounds[1] - bounds[0], leave - pos)
        out.append((utt, bounds[0], n, pos))
        pause = cfg.listen_s if rng.random() < cfg.listen_prob else cfg.pause_s
        pos += n + max(1, int(rng.uniform(*pause) / FRAME_S))
    return out


def make_party(source: SpeechSource, cfg: PartyConfig | None = None, speakers: list[str] | None = None,
               name: str = "party") -> Party:
    """Generate a party recording from ``source`` (deterministic under ``cfg.seed`` for a given source).

    ``speakers``: the guests to draw from (default: all of the source's; chapter 6 passes the test split's so the
    model never heard them). Raises :class:`SourceError` when there are fewer than ``cfg.max_present``.
    """
    cfg = cfg or PartyConfig()
    by_speaker = source.speakers()
    speakers = sorted(speakers if speakers is not None else by_speaker)
    unknown = sorted(set(speakers) - set(by_speaker))
    if unknown:
        raise SourceError(f"speakers {unknown[:5]} are not in the {source.name} source")
    if len(speakers) < cfg.max_present:
        raise SourceError(f"a party with up to {cfg.max_present} guests needs as many speakers, got {len(speakers)}")
    rng = np.random.default_rng([cfg.seed, 6])
    guests = guest_list(cfg, speakers, rng)
    n_frames = int(round(cfg.duration_s / FRAME_S))
    n = n_frames * FRAME
    mix = np.zeros(n, np.float64)
    who = sorted(guests["speaker"].unique())
    activity = np.zeros((len(who), n_frames), bool)
    for i, spk in enumerate(who):
        track = np.zeros(n, np.float32)
        for _, row in guests[guests["speaker"] == spk].iterrows():
            for utt, src, length, dst in _utterances(source, by_speaker[spk], cfg, rng, row["join"], row["leave"]):
                audio = source.load(utt)[src * FRAME:(src + length) * FRAME]
                track[dst * FRAME:dst * FRAME + len(audio)] += audio
                v = source.vad(utt, cfg.vad_mode)[src:src + length]
                activity[i, dst:dst + len(v)] |= v
        rms = np.sqrt(np.mean(track[track != 0] ** 2)) if np.any(track) else 1.0
        mix += track * (10 ** (rng.uniform(*cfg.gain_db) / 20) / max(rms, 1e-6))
    noise_seed = int(rng.integers(2**31))
    if cfg.snr_db is not None:
        speech = mix[mix != 0]
        p_speech = np.mean(speech**2) if speech.size else 1.0
        mix += background(n, noise_seed) * np.sqrt(p_speech / 10 ** (rng.uniform(*cfg.snr_db) / 10))
    mix *= 10 ** (cfg.peak_dbfs / 20) / max(np.abs(mix).max(), 1e-9)
    turns = pd.DataFrame([(name, "1", a * FRAME_S, (b - a) * FRAME_S, spk)
                          for spk, act in zip(who, activity) for a, b in to_runs(act)], columns=COLUMNS)
    presence = pd.DataFrame({"speaker": guests["speaker"], "join_s": guests["join"] * FRAME_S,
                             "leave_s": guests["leave"] * FRAME_S})
    return Party(name, mix.astype(np.float32), turns.sort_values(["onset", "speaker"], ignore_index=True),
                 presence, activity, who, cfg)


def party_from_run(run_dir: str | os.PathLike, cfg: PartyConfig | None = None, split: str = "test",
                   name: str = "party") -> Party:
    """A party of the speakers of one split of the data set chapter 1 built in ``run_dir`` (default: the test
    split, voices the models never trained on), from the same speech source (chapter 6)."""
    from .build import load_dataset_info, open_run_source

    speakers = load_dataset_info(run_dir)["speaker_lists"][split]
    return make_party(open_run_source(run_dir), cfg, speakers, name)


def save_party(party: Party, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<name>.wav`` (16-bit), ``<name>.rttm`` and ``<name>.json`` (guest list, config) atomically into
    ``folder``; returns the wav and RTTM paths (what :func:`ersam_lib.experiments.rttm_eval.evaluate_rttm` reads)."""
    folder = Path(folder)
    wav, rttm = folder / f"{party.name}.wav", folder / f"{party.name}.rttm"
    with atomic_path(wav) as tmp:
        sf.write(tmp, party.audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    atomic_write_text(rttm, format_rttm(party.turns))
    atomic_write_json(folder / f"{party.name}.json", {
        "duration_s": party.duration_s, "speakers": party.speakers, "config": dataclasses.asdict(party.config),
        "presence": party.presence.to_dict("records")})
    return wav, rttm
