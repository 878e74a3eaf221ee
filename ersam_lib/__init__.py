"""ersam_lib: the helper library of the ERSAM book.

All logic that the chapter notebooks use lives here, one module per pipeline stage:

- ``io``        atomic writes (nothing half-written on disk after a crash)
- ``scales``    the three run scales (smoke | tutorial | paper)
- ``rundir``    the layout of ``RUN_DIR`` and how chapters record metrics for the run summary
- ``progress``  tqdm progress bars that stay quiet when nobody watches
- ``runner``    executes the chapter notebooks with papermill and writes ``summary.json``
- ``cli``       ``python -m ersam_lib`` / ``ersam``

Later chapters add ``profiling``, ``space``, ``supernet``, ``distill``, ``teacher``, ``search``, ``deploy``.
"""

__version__ = "0.1.0"
