"""The streaming social-ambiance meter of chapter 6: 5-s windows over a recording of any length -> counts and levels.

``count(audio, counter)`` decodes a recording (wav/flac/ogg through soundfile, a path, ``"-"`` for standard input,
a binary file object or an array) block by block, averages its channels, resamples it to the model's rate, slides
a window of ``counter.window_s`` every ``hop_s`` seconds, brings each window to the training level
(:func:`data_prep.normalize.peak_normalize`), asks the model for class probabilities and returns one row per window:
``start_s, end_s, count, level, p_<class>...``. ``df.attrs`` holds the timings and the real-time factor.

Windows: window i covers ``[i * hop, i * hop + window)``. When the grid does not end exactly at the end of the
recording, ``tail="align"`` (the default) adds one last full window that *ends* at the end of the recording, so every
sample is heard and every window holds real audio (its start is off the grid); ``tail="drop"`` leaves the remainder
out (what the RTTM evaluation uses, so that windows match :func:`data_prep.rttm.window_counts`). A recording
shorter than one window is an error.

Ambiance levels: none / low / moderate / active, from the count by thresholds (default 1, 2, 4: the bins of
:data:`data_prep.labels.LEVELS`). A model trained on the ``levels`` class set predicts levels directly; its count
column is empty.

Models: anything that follows the small :class:`WindowCounter` protocol; :class:`TorchWindowCounter` wraps a torch
module that maps ``(B, samples)`` waveforms to logits. :func:`save_counter` / :func:`load_counter` store such a
module as a ``torch.export`` program (``.pt2``) with its model card beside it (:class:`ersam_lib.core.cards.ModelCard`);
:func:`load_counter` also runs the programs chapter 6 deploys (:mod:`ersam_lib.experiments.deploy`): an ExecuTorch
``.pte`` (:class:`ExecuTorchWindowCounter`) or an ONNX file (:class:`OnnxWindowCounter`), each with its card. A card
names its file and records its SHA-256 (:func:`read_card` checks both before any runtime reads the file), and a ``.pt2``
is read only when none of its pickles holds more than tensors (a model file never runs code). Chapter 6's programs bring
each window to the training level themselves (``normalizes`` in the card); the meter then refuses ``normalize=False``
rather than pretend to honour it. Bad input raises :class:`MeterError` with a one-line message that names the file.
"""

from data_prep.labels import DEFAULT_THRESHOLDS

from .audio import AudioInfo, audio_blocks
from .base import LEVEL_NAMES, SAMPLE_RATE, WINDOW_S, MeterError, WindowCounter, class_kind
from .counting import MeterConfig, check_thresholds, count, iter_windows, level_index, levels_of, summary_line
from .output import format_windows, output_format, plot_format, plot_timeline, to_json, write_windows
from .programs import (PROGRAM_FORMATS, ExecuTorchWindowCounter, OnnxWindowCounter, TorchWindowCounter, load_counter,
                       read_card, save_counter)

__all__ = [
    "AudioInfo", "DEFAULT_THRESHOLDS", "ExecuTorchWindowCounter", "LEVEL_NAMES", "MeterConfig", "MeterError",
    "OnnxWindowCounter", "PROGRAM_FORMATS", "SAMPLE_RATE", "TorchWindowCounter", "WINDOW_S", "WindowCounter",
    "audio_blocks", "check_thresholds", "class_kind", "count", "format_windows", "iter_windows", "level_index",
    "levels_of", "load_counter", "output_format", "plot_format", "plot_timeline", "read_card", "save_counter",
    "summary_line", "to_json", "write_windows",
]
