"""Layer 3, training: ``distill`` (uncertainty-gated distillation), ``train`` (the sandwich-rule supernet trainer,
``torchrun``-ready), ``fit`` (supervised training of one classifier: the teacher, the largest student, the
baselines).

A module here imports only from this layer and the ones below it (``tests/layering.py``)."""
