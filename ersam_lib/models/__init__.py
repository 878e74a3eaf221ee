"""Layer 2, the networks: ``space`` (chapter 4's search space and static networks), ``supernet`` (weight sharing, BN
recalibration, the hand-off to chapter 5), ``baselines`` (CountNet, TC-ResNet, MobileNetV2-style), ``teacher`` (the
teacher networks and their hand-off), ``countnet`` (CountNet's published Keras models, ported).

A module here imports only from this layer and the ones below it (``tests/layering.py``)."""
