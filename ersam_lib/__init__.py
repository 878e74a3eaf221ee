"""ersam_lib: the helper library of the ERSAM book.

All logic that the chapter notebooks use lives here, one module per concern. Imports flow one way, from the top of
this list to the bottom: a module imports only from its own layer or the ones below it, and never another module's
private (``_name``) names (``tests/layering.py`` holds the map and the test that enforces it).

0. **core**: ``io`` (atomic writes, locks, loading without pickles), ``rundir`` (the ``RUN_DIR`` layout, well-known
   files, recorded metrics, the errors that name a damaged file), ``scales`` (smoke | tutorial | paper), ``progress``
   (quiet progress bars), ``repro`` (seeds, device), ``records`` (results recorded elsewhere that ship with the package)
1. **data, evaluation, measurement**: ``data_prep`` (chapter 1's data set), ``data`` (features and waveforms as
   torch datasets, the one subset rule), ``evaluation`` (accuracy, MAE, predictions), ``complexity`` (parameters
   and MACs), ``export`` (ExecuTorch/ONNX exporters, runtime runners, the timing protocol), ``devices`` (host,
   phone over adb, imported profiles), ``costmodel`` (per-layer LUT + learned correction), ``costrule`` (ERSAM's
   operator rule), ``pareto`` (non-dominated sorting, hypervolume), ``frontend`` (chapter 1's log-mel as a torch
   module, so deployed programs take raw audio)
2. **models**: ``space`` (chapter 4's search space and static networks), ``supernet`` (weight sharing, BN
   recalibration, the hand-off to chapter 5), ``baselines`` (CountNet, TC-ResNet, MobileNetV2-style), ``teacher``
   (the teacher networks and their hand-off), ``countnet`` (CountNet's published Keras models, ported)
3. **training**: ``distill`` (uncertainty-gated distillation), ``train`` (the sandwich-rule supernet trainer,
   ``torchrun``-ready), ``fit`` (supervised training of one classifier: the teacher, the largest student)
4. **experiments**: ``profiling`` + ``profiling_plots`` (chapter 2), ``ablation`` (chapter 4), ``meter`` +
   ``rttm_eval`` (chapter 6: the streaming meter and its evaluation on annotated recordings), ``search`` +
   ``search_plots`` (chapter 5: objectives, strategies, the frontier), ``deploy`` (chapter 6: audio-in programs,
   PT2E int8, ExecuTorch/ONNX programs with cards and measured costs)
5. **runner and CLI**: ``runner`` (papermill), ``book`` (Jupyter Book), ``cli`` (``python -m ersam_lib`` / ``ersam``)
"""

__version__ = "0.1.0"
