"""ersam_lib: the helper library of the ERSAM book.

All logic that the chapter notebooks use lives here, one module per pipeline stage:

- ``io``        atomic writes (nothing half-written on disk after a crash)
- ``scales``    the three run scales (smoke | tutorial | paper)
- ``rundir``    the layout of ``RUN_DIR`` and how chapters record metrics for the run summary
- ``progress``  tqdm progress bars that stay quiet when nobody watches
- ``runner``    executes the chapter notebooks with papermill and writes ``summary.json``
- ``cli``       ``python -m ersam_lib`` / ``ersam``

Stages:

- ``devices``, ``profiling``, ``costmodel``, ``profiling_plots``   chapter 2: measuring, the operator grid and the
  hardware-aware rule, the per-layer lookup table with its learned correction
- ``baselines``   CountNet CRNN / F-CRNN, TC-ResNet8/14, a MobileNetV2-style net (chapters 2, 3, 5)
- ``teacher``     chapter 3: the wav2vec2 teacher, or the offline CRNN teacher
- ``space``, ``supernet``   chapter 4: the search space and the weight-sharing supernet
- ``distill``, ``train``, ``ablation``   chapter 4: uncertainty-gated distillation, the sandwich-rule trainer
  (``torchrun``-ready), the distillation ablation

Chapters 5 (search) and 6 (deployment) add ``search`` and ``deploy``.
"""

__version__ = "0.1.0"
