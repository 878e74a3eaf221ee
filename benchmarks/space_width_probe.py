"""Would a wider tutorial space reach the MobileNetV2-style baseline (issue 11)? Its largest architectures, trained alone.

Run:  .venv/bin/python benchmarks/space_width_probe.py runs/tutorial [tutorial,deep,wide96,wide]
The MobileNetV2-style baseline is trained from scratch with :class:`ersam_lib.training.fit.FitConfig` at ``tutorial``
(5 epochs on 6,000 mixtures). The same recipe on the largest architecture of the tutorial space, and of wider or
deeper variants of it, says how this family of 1-D networks gains with size against that baseline at equal training.
For each, this prints the largest architecture's MACs, parameters, predicted energy (chapter 5's calibrated
ExecuTorch cost model, the chapter's ``energy_mj``; for the baseline, chapter 5's measured figure), validation and
test accuracy and training time, beside the baseline as chapter 5 trained it in the same folder. The run's chapter 2
rule filters every space. (Chapter 5's finalists start from the supernet's weights and are fine-tuned, so they can beat
these stand-alone figures.) Its recorded figures (benchmarks/archive/, run M) predate the 2-D stem; the space now has
one, and every variant keeps it: ``benchmarks/stem_probe.py`` measures what the stem adds.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd

from ersam_lib.core.io import read_json
from ersam_lib.core.repro import seed_everything
from ersam_lib.experiments.search import run_search_setup
from ersam_lib.measure.complexity import count_params
from ersam_lib.measure.data import subset
from ersam_lib.measure.evaluation import eval_loader, evaluate
from ersam_lib.models.space import SearchSpace, StageSpace, build_model
from ersam_lib.training.fit import FitConfig, train_classifier


def _variants(base: SearchSpace) -> dict[str, SearchSpace]:
    """The run's space (``tutorial``) and wider or deeper versions of it: the same stages with larger options."""
    enc, ctx = base.encoder, base.context

    def add(stage: StageSpace, **more: tuple[int, ...]) -> StageSpace:
        return dataclasses.replace(stage, **{k: getattr(stage, k) + v for k, v in more.items()})

    stages = {
        "tutorial": (enc, ctx),
        "deep": (enc, tuple(add(s, depths=(3,)) for s in ctx)),
        "wide96": ((enc[0], add(enc[1], widths=(96,))),
                   (add(ctx[0], widths=(96,)), dataclasses.replace(ctx[1], widths=(48, 64, 96)))),
        "wide": ((add(enc[0], widths=(64,)), add(enc[1], widths=(96,))),
                 (add(ctx[0], widths=(96,)), add(ctx[1], widths=(128,)))),
    }
    return {name: dataclasses.replace(base, encoder=e, context=c) for name, (e, c) in stages.items()}


def main() -> None:
    run_dir = Path(sys.argv[1])
    run = run_search_setup(run_dir, runtime="executorch", cache=False)
    data, spaces = run.data, _variants(run.space)
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(spaces)
    cfg = FitConfig.for_scale("tutorial")
    mnv2 = read_json(run_dir / "search" / "baselines" / "mobilenetv2.json")
    mnv2_cost = pd.read_csv(run_dir / "search" / "frontier.csv").set_index("name").loc["mobilenetv2"]
    rows = [{"space": "(MobileNetV2-style baseline)", "arch": "2-D inverted residuals",
             "macs_M": mnv2_cost["macs"] / 1e6, "params": mnv2["params"],
             "energy_mj": mnv2_cost["energy_mj"], "val_acc": mnv2["val_acc"],
             "test_acc": mnv2["test_acc"], "train_s": mnv2["train_s"]}]
    for name in names:
        space = spaces[name]
        arch = space.largest()
        seed_everything(cfg.seed)
        model = build_model(arch, data.n_features, data.n_classes, space.attn_dim)
        t0 = time.perf_counter()
        fit = train_classifier(model, subset(data.train, cfg.max_train_samples, cfg.seed), data.val, cfg, "cpu")
        test = evaluate(model, eval_loader(data.test, 128))
        rows.append({"space": name, "arch": arch.describe(), "macs_M": space.macs(arch) / 1e6,
                     "params": count_params(model), "energy_mj": run.objectives.cost(arch)["energy_mj"],
                     "val_acc": fit.best_val_acc, "test_acc": test["acc"], "train_s": time.perf_counter() - t0})
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
