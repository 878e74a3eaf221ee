"""Chapter 6 speed target: the streaming meter at >= 1000x real time on one CPU core (decoding + features + model).

    flock /tmp/ersam-heavy.lock .venv/bin/python benchmarks/bench_meter.py [--model counter.pt2] [--seconds 600]

Writes a synthetic recording (``--rate``/``--channels``, 16-bit WAV; the content does not change the cost), then
times :func:`ersam_lib.experiments.meter.count` on it: reading, resampling and channel averaging, per-window
normalisation, features and model, all on one thread pinned to one core. Without ``--model`` the model is the tutorial
space's largest architecture (random weights: only the cost matters here) after numpy log-mel features
(:func:`data_prep.features.logmel`, the chapter-1 front end). Prints the real-time factor of the best of
``--repeats`` runs and its parts, and the CPU time (a fairer figure on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

from data_prep.config import FeatureConfig
from data_prep.features import logmel
from ersam_lib.experiments.meter import SAMPLE_RATE, WINDOW_S, count, load_counter
from ersam_lib.measure.complexity import count_params
from ersam_lib.models.space import SearchSpace, build_model


class LogmelCounter:
    """numpy log-mel features, standardised, then a torch model on ``(B, n_mels, frames)``: a WindowCounter."""

    def __init__(self, model: torch.nn.Module, classes: list[str], features: FeatureConfig,
                 mean: np.ndarray | float = 0.0, std: np.ndarray | float = 1.0) -> None:
        self.model, self.classes, self.features = model.eval(), classes, features
        self.mean, self.std = mean, std
        self.sample_rate, self.window_s = SAMPLE_RATE, WINDOW_S

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        x = np.stack([(logmel(w, self.features) - self.mean) / self.std for w in windows]).astype(np.float32)
        with torch.inference_mode():
            return torch.softmax(self.model(torch.from_numpy(x)), dim=-1).numpy()


def default_counter() -> tuple[LogmelCounter, str]:
    """The tutorial space's largest architecture on tutorial log-mel features (40 bands, hop 20 ms)."""
    features = FeatureConfig()
    n_frames = int(WINDOW_S * SAMPLE_RATE) // features.hop_length + 1
    space = SearchSpace.for_scale("tutorial", features.n_mels, 11, n_frames=250)
    arch = space.largest()
    model = build_model(arch, features.n_mels, 11, space.attn_dim)
    desc = (f"tutorial largest {arch.describe()}: {count_params(model) / 1e3:.0f} k params, "
            f"{space.macs(arch) / 1e6:.1f} MMACs per window, log-mel {features.n_mels} x {n_frames}")
    return LogmelCounter(model, [str(k) for k in range(11)], features), desc


class TorchLogmelNet(torch.nn.Module):
    """Waveforms ``(B, samples)`` -> logits: torchaudio log-mel (the chapter-1 settings) then the network; the
    shape of program the deployment chapter exports (its real front end is ``ersam_lib.measure.frontend``)."""

    def __init__(self, net: torch.nn.Module, features: FeatureConfig) -> None:
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=features.n_fft, win_length=features.win_length, hop_length=features.hop_length,
            n_mels=features.n_mels)
        self.net = net

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(self.mel(wave) + 1e-6))


def exported_counter(folder: Path) -> tuple[object, str]:
    """The default model with a torch log-mel front end, exported with save_counter and loaded back."""
    from ersam_lib.experiments.meter import save_counter

    counter, desc = default_counter()
    path = save_counter(TorchLogmelNet(counter.model, counter.features), counter.classes, folder / "bench.pt2")
    return load_counter(path), f"{desc}; torch log-mel front end, exported (torch.export .pt2) and reloaded"


def time_meter(counter: object, seconds: float = 600.0, rate: int = SAMPLE_RATE, channels: int = 1,
               hop: float = WINDOW_S, repeats: int = 3) -> tuple[list[dict], int]:
    """``(runs, windows)``: :func:`count` timed ``repeats`` times (after one warm-up) on a synthetic 16-bit WAV of
    ``seconds`` at ``rate`` x ``channels``; each run is ``df.attrs`` plus its CPU time ``cpu_s``. The caller pins
    the process to one core and one thread (what :func:`main` does); bench_deploy.py reuses it."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        path = Path(tmp) / "recording.wav"
        noise = 0.1 * rng.standard_normal((int(seconds * rate), channels)).astype(np.float32)
        sf.write(path, noise, rate, subtype="PCM_16")
        count(path, counter, hop_s=hop)  # warm-up: first calls allocate and build caches
        runs = []
        for _ in range(repeats):
            cpu0 = time.process_time()
            df = count(path, counter, hop_s=hop)
            runs.append(df.attrs | {"cpu_s": time.process_time() - cpu0})
    return runs, len(df)


def one_core() -> None:
    """Pin this process to one core and torch to one thread (the meter's speed target is per core)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, whatever torch would like
    torch.set_num_threads(1)


def report(runs: list[dict], windows: int, seconds: float) -> str:
    """The lines main() prints about the runs: best total and parts, real-time factor, CPU time."""
    best = min(runs, key=lambda a: a["total_s"])
    cpu = min(a["cpu_s"] for a in runs)
    return (f"best of {len(runs)}: total {best['total_s']:.3f} s = decode {best['decode_s']:.3f} s "
            f"+ normalise/features/model {best['model_s']:.3f} s; {1e3 * best['total_s'] / windows:.2f} ms per "
            f"window\nreal-time factor {best['rtf']:.2e}: {best['speed_x']:.0f}x real time "
            f"(median {statistics.median(a['speed_x'] for a in runs):.0f}x; target >= 1000x: "
            f"{'met' if best['speed_x'] >= 1000 else 'NOT met'})\n"
            # On a shared machine wall time includes waiting for the core; CPU time is what the meter itself used.
            f"CPU time (best): {cpu:.3f} s: {seconds / cpu:.0f}x real time per core")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="counter program with its card (.pt2, or chapter 6's .pte/.onnx); default: the "
                   "tutorial space's largest arch")
    p.add_argument("--seconds", type=float, default=600.0, help="length of the synthetic recording")
    p.add_argument("--rate", type=int, default=SAMPLE_RATE, help="its sample rate (e.g. 44100 to time resampling)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--hop", type=float, default=WINDOW_S)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--exported", action="store_true",
                   help="time the default model as an exported bundle (torch log-mel inside) instead")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args()
    one_core()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            counter, desc = load_counter(args.model), f"program {args.model}"
        else:
            counter, desc = exported_counter(Path(tmp)) if args.exported else default_counter()
        runs, windows = time_meter(counter, args.seconds, args.rate, args.channels, args.hop, args.repeats)
    print(f"model: {desc}")
    print(f"host: {platform.node()} {platform.processor() or platform.machine()}, 1 thread on 1 core, "
          f"torch {torch.__version__}")
    print(f"recording: {args.seconds:.0f} s at {args.rate} Hz x {args.channels} ch, hop {args.hop:g} s, "
          f"{windows} windows")
    print(report(runs, windows, args.seconds))
    if args.out:
        from ersam_lib.core.io import atomic_write_json

        atomic_write_json(args.out, {"model": desc, "seconds": args.seconds, "rate": args.rate,
                                     "channels": args.channels, "hop_s": args.hop, "windows": windows,
                                     "runs": [{k: a[k] for k in ("decode_s", "model_s", "total_s", "cpu_s", "rtf",
                                                                 "speed_x")} for a in runs],
                                     "host": platform.node()})
        print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
