"""ersam_lib: the helper library of the ERSAM book.

All logic that the chapter notebooks use lives here, one module per concern, in one sub-package per layer. Imports
flow one way, from the top of this list to the bottom: a module imports only from its own layer or the ones below
it, and never another module's private (``_name``) names (``tests/layering.py`` holds the map and the test that
enforces it; the README's architecture section draws it).

0. ``core``: files, the run folder, the registry of stages, scales, the typed hand-offs
1. ``measure`` (with ``data_prep``): data access, evaluation, export and timing, devices, the cost model
2. ``models``: the search space, the supernet, the baselines, the teachers
3. ``training``: distillation, the supernet trainer, supervised fitting
4. ``experiments``: each chapter's experiment (profiling, ablation, search, frontier, deployment, the meter)
5. ``app``: the runner, the command line, the book, the comparison with the reference
"""

__version__ = "0.1.0"
