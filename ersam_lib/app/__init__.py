"""Layer 5, running and rendering the book: ``runner`` (papermill, the run summary), ``cli`` (``python -m ersam_lib`` /
``ersam``), ``book`` (Jupyter Book), ``compare`` (a run against the reference), ``students`` (the student copies), ``pages`` (the library's source as
the chapters show it), ``architecture`` (the README's drawing of stages and layers).

A module here imports only from this layer and the ones below it (``tests/layering.py``)."""
