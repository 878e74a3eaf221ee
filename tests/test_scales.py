"""What a scale means, in one table (ersam_lib.core.scales.SIZES): every stage's config is one lookup into it."""

from __future__ import annotations

import pytest

from data_prep.config import DataConfig
from data_prep.party import PartyConfig
from ersam_lib.core.scales import SCALES, SIZES, sizes
from ersam_lib.experiments.deploy import DeployConfig
from ersam_lib.experiments.frontier import FrontierConfig
from ersam_lib.experiments.profiling import OperatorGrid, ProfilingConfig
from ersam_lib.experiments.search import SearchBudget
from ersam_lib.measure.export import TimingConfig
from ersam_lib.models.space import SearchSpace
from ersam_lib.models.teacher import TeacherConfig
from ersam_lib.training.fit import FitConfig
from ersam_lib.training.train import TrainConfig

CONFIGS = {"party": PartyConfig, "operator_grid": OperatorGrid, "profiling": ProfilingConfig, "timing": TimingConfig,
           "teacher": TeacherConfig, "train": TrainConfig, "search": SearchBudget, "frontier": FrontierConfig,
           "fit": FitConfig, "deploy": DeployConfig}


def test_every_entry_sets_every_scale() -> None:
    assert all(tuple(entry) == SCALES for entry in SIZES.values())
    assert set(CONFIGS) | {"data", "space", "ablation"} == set(SIZES)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_config_for_a_scale_is_what_the_table_says(name: str, scale: str) -> None:
    cfg = CONFIGS[name].for_scale(scale)
    assert {k: getattr(cfg, k) for k in sizes(name, scale)} == sizes(name, scale)


@pytest.mark.parametrize("scale", SCALES)
def test_the_nested_entries_build_the_data_set_and_the_space(scale: str) -> None:
    table, data = sizes("data", scale), DataConfig.for_scale(scale)
    assert all(getattr(data.features, k) == v for k, v in table.get("features", {}).items())
    space = SearchSpace.for_scale(scale, 40, 11)
    assert len(space.encoder) == len(sizes("space", scale)["encoder"]) and space.attn_dim == sizes("space", scale)[
        "attn_dim"]
    with pytest.raises(ValueError, match="unknown SCALE"):
        sizes("teacher", "huge")
