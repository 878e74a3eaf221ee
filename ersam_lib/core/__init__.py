"""Layer 0, the core every other layer builds on: ``io`` (atomic writes, locks, loading without pickles, digests),
``rundir`` (the ``RUN_DIR`` layout, well-known files, recorded metrics, the errors that name a damaged file),
``stages`` (the registry of chapters: labels, files, metric specs), ``scales`` (smoke | tutorial | paper: every
per-scale setting), ``cards`` (the typed hand-offs: model cards, chapter 5's choice), ``progress`` (quiet progress
bars), ``repro`` (seeds, device), ``records`` (results recorded elsewhere that ship with the package).

A module here imports only from this layer and the ones below it (``tests/layering.py``)."""
