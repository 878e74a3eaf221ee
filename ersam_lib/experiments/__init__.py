"""Layer 4, each chapter's experiment: ``profiling`` + ``profiling_plots`` (chapter 2), ``ablation`` (chapter 4),
``search`` + ``search_plots`` + ``frontier`` (chapter 5: objectives, strategies, the frontier), ``deploy`` (chapter
6: audio-in programs, PT2E int8, ExecuTorch/ONNX programs with cards and measured costs), ``meter`` + ``rttm_eval``
(chapter 6: the streaming meter and its evaluation on annotated recordings).

A module here imports only from this layer and the ones below it (``tests/layering.py``)."""
