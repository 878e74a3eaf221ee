"""Layer 1, data access, evaluation and measurement (with ``data_prep``, chapter 1's data set): ``data`` (features and
waveforms as torch datasets, the one subset rule), ``evaluation`` (accuracy, MAE, predictions), ``complexity``
(parameters and MACs), ``export`` (ExecuTorch/ONNX exporters, runtime runners, the timing protocol), ``devices``
(host, phone over adb, imported profiles), ``costmodel`` (per-layer LUT + learned correction), ``costrule`` (ERSAM's
operator rule), ``pareto`` (non-dominated sorting, hypervolume), ``frontend`` (chapter 1's log-mel as a torch module,
so deployed programs take raw audio), ``uncertainty`` (intervals of accuracy and MAE, paired tests between models,
the verdicts the chapters print).

A module here imports only from this layer and the ones below it (``tests/layering.py``)."""
