"""A thin ctypes binding to libespeak-ng from the ``espeakng-loader`` wheel (chapter 1, the offline speech source).

``pip install`` alone gives a speech synthesiser this way: no system package, no internet. Only the handful of calls
the TTS source needs are bound: initialise in synchronous mode, pick a voice (language + variant), set prosody
parameters, synthesise text into a callback that collects 16-bit samples.

espeak-ng's output is not a function of its input alone: the library keeps global state that ``espeak_Terminate``
does not reset (a block of speakers sounds different after another block), and the breathy variants (``f2``, ``f3``)
draw noise from a generator seeded with the clock at initialisation. :meth:`Espeak.fresh` loads a private copy of the
library for one job and unloads it afterwards, and :meth:`Espeak.seed` fixes the noise: with both, the same job gives
the same samples in any process, at any time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_AUTO = 0
# espeak_PARAMETER enum values (speak_lib.h)
PARAMS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """libespeak-ng could not be loaded or refused a request."""


class Espeak:
    """One libespeak-ng instance per process (the C library keeps global state, so do not share across threads).

    Introduced in chapter 1; used by :mod:`data_prep.sources.tts`.
    """

    def __init__(self, library: str | os.PathLike | None = None) -> None:
        espeakng_loader = _loader()
        data = espeakng_loader.get_data_path()
        os.environ.setdefault("ESPEAK_DATA_PATH", data)
        self._lib = ctypes.CDLL(str(library or espeakng_loader.get_library_path()))
        self._lib.espeak_Initialize.restype = ctypes.c_int
        rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, os.path.dirname(data).encode(), 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}); data path {data}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: ctypes must not free it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    @contextlib.contextmanager
    def fresh(cls) -> Iterator[Espeak]:
        """An instance with new global state: a private copy of the library, unloaded when the block ends.

        Chapter 1's TTS corpus synthesises each block of speakers this way, so the corpus is bit-exact on any
        machine whatever the number of workers and the order in which they took the blocks.
        """
        with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
            eng = cls(shutil.copy(_loader().get_library_path(), tmp))
            try:
                yield eng
            finally:
                eng.close()

    def seed(self, value: int) -> None:
        """Seed the library's noise generator (``espeak_ng_SetRandSeed``; espeak-ng seeds it from the clock)."""
        fn = self._lib.espeak_ng_SetRandSeed
        fn.argtypes, fn.restype = [ctypes.c_long], None
        fn(int(value) & 0x7FFFFFFF)

    def close(self) -> None:
        """Terminate the library and unload it (the instance cannot synthesise afterwards)."""
        if self._lib is None:
            return
        import _ctypes  # dlclose: CPython's own binding, the only way to unload a library loaded by ctypes

        self._lib.espeak_Terminate()
        handle, self._lib = self._lib._handle, None
        _ctypes.dlclose(handle)

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def set_voice(self, name: str) -> None:
        """Select a voice such as ``"en-us+m3"`` (language + variant)."""
        err = self._lib.espeak_SetVoiceByName(name.encode())
        if err != 0:
            raise EspeakError(f"espeak-ng has no voice {name!r} (error {err})")

    def set_params(self, **params: int) -> None:
        """Set prosody: ``rate`` (words/min), ``pitch`` (0-99), ``range`` (0-99), ``volume``, ``wordgap`` (10 ms)."""
        for key, value in params.items():
            err = self._lib.espeak_SetParameter(PARAMS[key], int(value), 0)
            if err != 0:
                raise EspeakError(f"espeak_SetParameter({key}={value}) failed (error {err})")

    def synth(self, text: str) -> np.ndarray:
        """Synthesise ``text`` with the current voice; int16 samples at :attr:`sample_rate`."""
        self._chunks = []
        # Re-register: the library holds one callback for the whole process, and another instance (since freed)
        # may have replaced ours; calling a freed ctypes thunk would crash the interpreter.
        self._lib.espeak_SetSynthCallback(self._callback)
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        err = self._lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, ESPEAK_CHARS_AUTO, None, None)
        if err != 0:
            raise EspeakError(f"espeak_Synth failed (error {err})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _loader():
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise EspeakError("the 'espeakng-loader' wheel is required for the built-in TTS source") from e
    return espeakng_loader
