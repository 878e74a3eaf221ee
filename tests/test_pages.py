"""What a chapter's page shows of the library: its own source, named, and never a function too long to read."""

import pytest

from ersam_lib.app.pages import show_source, source_of
from ersam_lib.measure.pareto import hypervolume_2d
from ersam_lib.models.supernet import Supernet


def test_the_source_is_the_module_s_own_and_named() -> None:
    src = source_of(hypervolume_2d)
    assert src.startswith("# ersam_lib.measure.pareto.hypervolume_2d\ndef hypervolume_2d(")
    shown = show_source(hypervolume_2d, Supernet.get_active_subnet).data
    assert shown.count("```python\n") == 2 and "# ersam_lib.models.supernet.Supernet.get_active_subnet" in shown
    assert "\n    def get_active_subnet" not in shown  # methods are dedented


def test_what_cannot_be_shown_is_refused() -> None:
    with pytest.raises(ValueError, match="lines long, over the 5 a page shows: split it"):
        source_of(hypervolume_2d, max_lines=5)
    with pytest.raises(ValueError, match="no source to show"):
        source_of(len)
    with pytest.raises(ValueError, match="at least one"):
        show_source()
