"""The meter's input (chapter 6): any recording, decoded block by block, mono, resampled to the model's rate."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .base import SAMPLE_RATE, MeterError, first_line

__all__ = ["AudioInfo", "audio_blocks"]


@dataclass
class AudioInfo:
    """What the decoder learned about its input: name, input rate and channels, samples at the output rate, and
    warnings about the input (a truncated file) that do not stop the count."""

    name: str
    input_rate: int
    channels: int
    n_samples: int = 0
    decode_s: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def audio_blocks(audio: str | os.PathLike | BinaryIO | np.ndarray, sample_rate: int = SAMPLE_RATE,
                 block_s: float = 60.0, input_rate: int | None = None) -> Iterator[tuple[Iterator[np.ndarray],
                                                                                      AudioInfo]]:
    """Yield ``(blocks, info)``: mono float32 blocks of ``audio`` at ``sample_rate``, decoded lazily.

    ``audio``: a path, ``"-"`` (standard input, read whole: a pipe cannot seek), a binary file object, or an array
    ``(samples,)``/``(samples, channels)`` with its ``input_rate``. ``info.n_samples`` and ``info.decode_s``
    (decoding and resampling time) grow as the blocks are consumed.
    """
    if isinstance(audio, np.ndarray):
        if input_rate is None:
            raise MeterError("an audio array needs its sample rate (input_rate=...)")
        x = audio[:, None] if audio.ndim == 1 else audio
        if x.ndim != 2 or x.size == 0:
            raise MeterError(f"an audio array must be (samples,) or (samples, channels), got shape {audio.shape}")
        info = AudioInfo("<array>", int(input_rate), int(x.shape[1]))
        yield _timed(_resample_blocks(_array_reader(x), int(input_rate), sample_rate, block_s), info), info
        return
    name, f, head = _open_soundfile(audio)
    with f:
        info = AudioInfo(name, int(f.samplerate), int(f.channels), warnings=_truncation(name, f, head))
        yield _timed(_resample_blocks(_file_reader(f, name), info.input_rate, sample_rate, block_s), info), info


def _open_soundfile(audio: str | os.PathLike | BinaryIO) -> tuple[str, sf.SoundFile, bytes]:
    """``(name, opened file, its first bytes)``; the bytes (empty for a stream that cannot be peeked) let
    :func:`_truncation` read a WAV header's own length."""
    head = b""
    if isinstance(audio, (str, os.PathLike)) and str(audio) == "-":
        name, data = "<stdin>", sys.stdin.buffer.read()
        if not data:
            raise MeterError("standard input is empty: pipe an audio file into it")
        audio, head = io.BytesIO(data), data[:_HEAD_BYTES]
    elif isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        name = str(path)
        if not path.exists():
            raise MeterError(f"audio file {path} does not exist")
        if not path.is_file():
            raise MeterError(f"{path} is not a file")
        if path.stat().st_size == 0:
            raise MeterError(f"audio file {path} is empty")
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    else:
        name = getattr(audio, "name", "<stream>")
    try:
        return str(name), sf.SoundFile(audio if not isinstance(audio, (str, os.PathLike)) else str(audio)), head
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for non-audio and corrupt data
        raise MeterError(f"cannot read {name} as audio (wav/flac/ogg): {first_line(e)}") from e


_HEAD_BYTES = 1 << 16  # enough for the chunks a WAV writer puts before its audio


def _truncation(name: str, f: sf.SoundFile, head: bytes) -> list[str]:
    """A warning when a WAV file holds fewer frames than its header declares (a copy cut short): libsndfile reads
    what is there without a word, so the meter says it."""
    declared = _declared_wav_frames(head)
    if declared is None or declared <= f.frames:
        return []
    rate = f.samplerate
    return [f"{name} is truncated: its header declares {declared / rate:.2f} s of audio but the file holds "
            f"{f.frames / rate:.2f} s; counting what is there"]


def _declared_wav_frames(head: bytes) -> int | None:
    """Frames the ``data`` chunk of a RIFF/WAVE header declares (``None``: not a plain WAV, or a streamed one whose
    writer left the length open)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")  # bytes per frame
        if chunk == b"data":
            return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


def _file_reader(f: sf.SoundFile, name: str) -> Callable[[int], np.ndarray]:
    """A function of n -> up to n mono frames of ``f`` (empty at the end), checked for corrupt data."""
    def read(n: int) -> np.ndarray:
        try:
            x = f.read(n, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001
            raise MeterError(f"cannot decode {name}: {first_line(e)}") from e
        x = _mono(x)
        if not np.isfinite(x).all():
            raise MeterError(f"{name} holds non-finite samples (NaN or infinity): the file is corrupt")
        return x
    return read


def _mono(x: np.ndarray) -> np.ndarray:
    """Average of the channels of (frames, channels): a matrix-vector product (numpy's mean over a short axis
    is several times slower, and decoding is most of the meter's time on 44.1-kHz stereo)."""
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0])
    return x @ np.full(x.shape[1], 1 / x.shape[1], np.float32)


def _array_reader(x: np.ndarray) -> Callable[[int], np.ndarray]:
    mono = _mono(np.asarray(x, np.float32))
    if not np.isfinite(mono).all():
        raise MeterError("the audio array holds non-finite samples (NaN or infinity)")
    pos = 0

    def read(n: int) -> np.ndarray:
        nonlocal pos
        out = mono[pos:pos + n]
        pos += len(out)
        return out
    return read


def _resample_blocks(read: Callable[[int], np.ndarray], rate_in: int, rate_out: int,
                     block_s: float) -> Iterator[np.ndarray]:
    """Blocks at ``rate_out``, equal (up to float rounding) to resampling the whole signal at once.

    Each input block is resampled with a margin of neighbouring samples beyond the reach of resample_poly's
    filter; block edges sit on multiples of ``down`` input samples, which map to whole output samples.
    """
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    block = max(int(block_s * rate_in) // down * down, down)
    if up == down:
        while len(x := read(block)):
            yield x
        return
    reach = math.ceil(10 * max(up, down) / up) + 1  # resample_poly's default filter: 10 * max(up, down) taps a side
    margin = math.ceil(reach / down) * down
    buf, buf_lo, done, eof = np.zeros(0, np.float32), 0, 0, False
    while not eof:
        chunk = read(block)
        eof = len(chunk) == 0
        buf = np.concatenate([buf, chunk])
        hi = buf_lo + len(buf)
        end = hi if eof else (hi - margin) // down * down
        if end <= done:
            continue
        lo = max(done - margin, 0)
        seg = buf[lo - buf_lo:(hi if eof else end + margin) - buf_lo]
        y = resample_poly(seg, up, down).astype(np.float32)
        skip = (done - lo) * up // down
        yield y[skip:skip + math.ceil((end - done) * up / down)]
        done = end
        keep = max(done - margin, 0)
        buf, buf_lo = buf[keep - buf_lo:], keep


def _timed(blocks: Iterator[np.ndarray], info: AudioInfo) -> Iterator[np.ndarray]:
    while True:
        t0 = time.perf_counter()
        block = next(blocks, None)
        info.decode_s += time.perf_counter() - t0
        if block is None:
            return
        info.n_samples += len(block)
        yield block

