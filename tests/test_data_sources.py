"""Chapter 1: each speech source (TTS, a generated miniature LibriSpeech tree, a speaker folder) and bad input."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from data_prep.config import TtsConfig
from data_prep.sources import (FolderSource, LibriSpeechSource, SourceError, TtsSource, download_librispeech,
                               synthesize_corpus)
from data_prep.sources.files import sha256_file
from data_prep.sources.tts import make_identities


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """A few real speech-like utterances at 16 kHz (espeak-ng), to write into file trees."""
    from data_prep.espeak import Espeak

    eng = Espeak()
    out = []
    for i, voice in enumerate(["en+m3", "en-us+f2", "de", "fr+m1", "es+f3", "it"]):
        eng.set_voice(voice)
        wav = eng.synth(f"counting speakers in a room, take {i}").astype(np.float32) / 32768
        out.append(resample_poly(wav, 320, 441).astype(np.float32))
    return out


def write_librispeech(root, speech, n_speakers=6, per_speaker=2, subsets=("dev-clean",) * 4 + ("test-clean",) * 2):
    for s in range(n_speakers):
        subset = subsets[s] if s < len(subsets) else subsets[-1]
        for u in range(per_speaker):
            path = root / "LibriSpeech" / subset / str(100 + s) / "7" / f"{100 + s}-7-{u:04d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, speech[(s + u) % len(speech)], 16000)
    return root


def test_tts_identities_are_distinct_and_deterministic():
    ids = make_identities(700, seed=0)
    assert len({i["speaker"] for i in ids}) == 700
    assert len({(i["language"], i["variant"], i["pitch"], i["range"], i["rate"]) for i in ids}) == 700
    assert make_identities(50, seed=0) == ids[:50] and make_identities(50, seed=1) != ids[:50]


def test_tts_corpus_is_cached_and_deterministic(tmp_path):
    cfg = TtsConfig(n_speakers=3, utts_per_speaker=2, min_words=4, max_words=6)
    folder = synthesize_corpus(cfg, tmp_path / "a", workers=1)
    src = TtsSource(folder)
    idx = src.index()
    assert len(idx) == 6 and idx["speaker"].nunique() == 3
    utt = idx["utt_id"].iloc[0]
    audio, vad = src.load(utt), src.vad(utt)
    assert audio.dtype == np.float32 and 0.5 < len(audio) / 16000 < 10
    assert len(vad) == len(audio) // 160 and vad.mean() > 0.5  # synthetic speech is mostly voiced
    # a second call reuses the cache (same samples)
    assert synthesize_corpus(cfg, tmp_path / "a") == folder
    assert np.array_equal(TtsSource(folder).load(utt), audio)
    assert src.describe()["x_real_time"] > 1 and len(src.describe()["audio_sha256"]) == 64


def test_tts_corpus_is_bit_exact_whatever_the_workers_and_the_process_history(tmp_path, monkeypatch):
    """espeak-ng's output depends on what its process synthesised before; each block gets a fresh library, so a
    corpus synthesised again (other workers, other block order, a process that used espeak-ng already) is the same."""
    import data_prep.sources.tts as tts
    from data_prep.espeak import Espeak

    monkeypatch.setattr(tts, "BLOCK", 2)  # 3 blocks: the workers take them in an order that varies
    cfg = TtsConfig(n_speakers=5, utts_per_speaker=2, min_words=4, max_words=6)
    first = TtsSource(synthesize_corpus(cfg, tmp_path / "a", workers=1)).fingerprint()
    shared = Espeak()  # a process that has synthesised before
    shared.set_voice("de")
    shared.synth("ein anderer Satz zuerst")
    again = TtsSource(synthesize_corpus(cfg, tmp_path / "b", workers=2)).fingerprint()
    assert again == first
    assert len(shared.synth("still usable")) > 0  # the fresh libraries left the process's own instance alone


def test_breathy_voices_are_the_same_at_another_time():
    """espeak-ng seeds its noise generator from the clock; the breathy variants draw from it."""
    import time

    from data_prep.espeak import Espeak

    def say() -> np.ndarray:
        with Espeak.fresh() as eng:
            eng.set_voice("en+f2")
            eng.seed(7)
            return eng.synth("a breathy voice counts the speakers in the room")

    first = say()
    time.sleep(1.1)  # another second on the clock
    assert np.array_equal(say(), first)


def test_tts_synthesis_resumes_from_finished_blocks(tmp_path, monkeypatch):
    import data_prep.sources.tts as tts

    cfg = TtsConfig(n_speakers=3, utts_per_speaker=1, min_words=3, max_words=4)
    monkeypatch.setattr(tts, "BLOCK", 1)
    calls = []
    real = tts._synth_block

    def fail_on_second(block, c, out):
        calls.append(block[0]["speaker"])
        if len(calls) == 2:
            raise RuntimeError("simulated kill")
        return real(block, c, out)

    monkeypatch.setattr(tts, "_synth_block", fail_on_second)
    with pytest.raises(RuntimeError, match="simulated kill"):
        synthesize_corpus(cfg, tmp_path, workers=1)
    folder = tmp_path / "tts" / cfg.key()
    assert not (folder / "corpus.json").exists() and len(list((folder / "parts").glob("*.npz"))) == 1
    assert not list((folder / "parts").glob(".*"))  # no half-written block
    monkeypatch.setattr(tts, "_synth_block", real)
    calls.clear()
    synthesize_corpus(cfg, tmp_path, workers=1)
    assert len(TtsSource(folder).index()) == 3


def test_librispeech_miniature_tree(tmp_path, speech):
    root = write_librispeech(tmp_path, speech)
    src = LibriSpeechSource(root)
    assert src.index()["speaker"].nunique() == 6 and len(src.index()) == 12
    assert src.speakers()["100"] == ["100-7-0000", "100-7-0001"]
    assert np.allclose(src.load("100-7-0000"), speech[0], atol=1e-4)  # FLAC is lossless up to 16-bit rounding
    assert src.vad("100-7-0000").any()
    only_dev = LibriSpeechSource(root / "LibriSpeech", subsets=["dev-clean"])
    assert only_dev.index()["speaker"].nunique() == 4
    with pytest.raises(SourceError, match="train-clean-360"):
        LibriSpeechSource(root, subsets=["train-clean-360"])


def test_folder_source_resamples_and_downmixes(tmp_path, speech):
    (tmp_path / "ann" / "day1").mkdir(parents=True)
    (tmp_path / "ben").mkdir()
    sf.write(tmp_path / "ann" / "day1" / "a.wav", speech[0], 16000)
    x44 = resample_poly(speech[1], 441, 160).astype(np.float32)
    sf.write(tmp_path / "ben" / "b.flac", np.stack([x44, x44], axis=1), 44100)  # wrong rate, stereo
    (tmp_path / "ben" / "notes.txt").write_text("not audio")
    src = FolderSource(tmp_path)
    assert src.speakers() == {"ann": ["ann/day1/a"], "ben": ["ben/b"]}
    b = src.load("ben/b")
    assert b.ndim == 1 and abs(len(b) - len(speech[1])) <= 2  # resampled to 16 kHz


def test_a_moved_folder_keeps_its_fingerprint_and_other_files_change_it(tmp_path, speech):
    for spk, x in zip(("ann", "ben"), speech):
        (tmp_path / "a" / spk).mkdir(parents=True)
        sf.write(tmp_path / "a" / spk / "u.flac", x, 16000)
    (tmp_path / "a").rename(tmp_path / "b")  # a renamed checkout: runs built from it must stay usable
    moved = FolderSource(tmp_path / "b").fingerprint()
    (tmp_path / "b").rename(tmp_path / "a")
    here = FolderSource(tmp_path / "a").fingerprint()
    assert moved == here and str(tmp_path) not in str(here)
    sf.write(tmp_path / "a" / "ben" / "u.flac", speech[0][:8000], 16000)  # another recording under the same name
    assert FolderSource(tmp_path / "a").fingerprint() != here


def test_corrupt_files_are_skipped_and_reported_or_raise(tmp_path, speech):
    root = write_librispeech(tmp_path, speech, n_speakers=2, per_speaker=1)
    bad = root / "LibriSpeech" / "dev-clean" / "100" / "7" / "100-7-0009.flac"
    bad.write_bytes(b"fLaC but then garbage" * 10)
    src = LibriSpeechSource(root, on_error="skip")
    assert len(src.index()) == 2 and len(src.skipped) == 1 and src.skipped[0]["path"].endswith("100-7-0009.flac")
    with pytest.raises(SourceError, match="100-7-0009.flac"):
        LibriSpeechSource(root, on_error="raise")


def test_missing_or_empty_roots_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope")
    with pytest.raises(SourceError, match="no readable"):
        FolderSource(tmp_path)
    (tmp_path / "LibriSpeech" / "dev-clean").mkdir(parents=True)
    with pytest.raises(SourceError, match="no LibriSpeech FLAC"):
        LibriSpeechSource(tmp_path)


def test_download_verifies_checksum(tmp_path, speech):
    tree = write_librispeech(tmp_path / "src", speech, n_speakers=1, per_speaker=1)
    archive = tmp_path / "dev-clean.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree / "LibriSpeech", arcname="LibriSpeech")
    url = archive.as_uri()
    dest = tmp_path / "dest"
    with pytest.raises(SourceError, match="checksum mismatch"):
        download_librispeech("dev-clean", dest, url=url, sha256="0" * 64)
    assert not (dest / "dev-clean.tar.gz").exists() and not (dest / "LibriSpeech").exists()
    out = download_librispeech("dev-clean", dest, url=url, sha256=sha256_file(archive))
    assert LibriSpeechSource(out).index()["utt_id"].tolist() == ["100-7-0000"]
    assert not list(dest.glob(".dev-clean*"))  # staging folder removed


def test_librispeech_splits_by_subset_like_libricount(tmp_path, speech):
    import data_prep as dp
    from data_prep.manifest import make_manifest

    subsets = ("train-clean-360",) * 3 + ("dev-clean",) * 2 + ("test-clean",) * 2
    root = write_librispeech(tmp_path, speech, n_speakers=7, per_speaker=2, subsets=subsets)
    (root / "LibriSpeech" / "train-other-500").mkdir()  # present but not asked for
    cfg = dp.DataConfig.tiny(source="librispeech", root=str(root), per_class={"train": 3, "val": 2, "test": 2},
                             subset_splits={"train": ["train-clean-360"], "val": ["dev-clean"], "test": ["test-clean"]})
    m = make_manifest(cfg, dp.sources.open_source(cfg))
    by_split = {s: set().union(set(), *m.loc[m.split == s, "speakers"].map(set)) for s in ("train", "val", "test")}
    # speaker ids are namespaced by their source
    assert by_split["train"] <= {"librispeech:100", "librispeech:101", "librispeech:102"}
    assert by_split["val"] <= {"librispeech:103", "librispeech:104"}
    assert by_split["test"] <= {"librispeech:105", "librispeech:106"}
    bad = dp.DataConfig.tiny(source="librispeech", root=str(root),
                             subset_splits={"train": ["train-clean-360"], "val": ["dev-clean"], "test": ["dev-clean"]})
    with pytest.raises(SourceError, match="share speakers"):
        make_manifest(bad, dp.sources.open_source(bad))


def test_cli_download_reports_a_bad_subset(tmp_path, capsys):
    from data_prep.cli import main

    assert main(["download", "--root", str(tmp_path), "--subset", "train-other-999"]) == 2
    assert "no known checksum" in capsys.readouterr().err and not list(tmp_path.iterdir())


_SYNTH = """
import sys
import data_prep.sources.tts as tts
from data_prep.config import TtsConfig

real = tts._synth_block
def logged(block, cfg, out):
    with open(sys.argv[1], "a") as f:
        f.write(out.name + "\\n")
    return real(block, cfg, out)
tts._synth_block = logged
folder = tts.synthesize_corpus(TtsConfig(n_speakers=6, utts_per_speaker=1, min_words=3, max_words=4), workers=1)
print(len(tts.TtsSource(folder).index()))
"""


def test_two_synthesisers_of_one_corpus_synthesise_it_once(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, ERSAM_CACHE=str(tmp_path / "cache"), ERSAM_PROGRESS="0",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    log = tmp_path / "blocks.log"
    procs = [subprocess.Popen([sys.executable, "-c", _SYNTH, str(log)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert [o.strip() for o, _ in outs] == ["6", "6"]  # the second waited, then reused the corpus
    assert log.read_text().splitlines() == ["block_0000.npz"]  # 6 speakers = one block, synthesised once
    folder = next((tmp_path / "cache" / "tts").glob("[0-9a-f]*"))
    assert sorted(p.name for p in folder.iterdir()) == ["audio.npy", "corpus.json", "index.parquet", "vad.npy"]


def test_a_damaged_corpus_is_named_then_synthesised_again(tmp_path):
    from ersam_lib.core.io import ArtifactError

    cfg = TtsConfig(n_speakers=3, utts_per_speaker=1, min_words=3, max_words=4)
    folder = synthesize_corpus(cfg, tmp_path, workers=1)
    audio = folder / "audio.npy"
    audio.write_bytes(audio.read_bytes()[: audio.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"audio\.npy is not a readable NumPy array"):
        TtsSource(folder)
    with pytest.warns(UserWarning, match="synthesising the corpus again"):
        assert synthesize_corpus(cfg, tmp_path, workers=1) == folder
    assert len(TtsSource(folder).index()) == 3
    data = np.load(audio, mmap_mode="r+")
    data[:] = 1000  # same size, other samples: only the recorded hash tells
    data.flush()
    del data
    with pytest.raises(ArtifactError, match="does not match the audio_sha256"):
        TtsSource(folder)


class _RangeServer:
    """A local HTTP server for one file that honours Range requests, or stalls after ``stall_after`` bytes."""

    def __init__(self, payload: bytes, stall_after: int | None = None):
        import http.server
        import threading

        outer = self
        self.payload, self.stall_after, self.ranges = payload, stall_after, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
                outer.ranges.append(start)
                body = outer.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.stall_after is not None:
                    self.wfile.write(body[:outer.stall_after])
                    self.wfile.flush()
                    outer.release.wait(30)  # stall: send nothing more
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.release = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dev-clean.tar.gz"

    def close(self):
        self.release.set()
        self.httpd.shutdown()


def test_download_times_out_keeps_its_part_and_resumes(tmp_path):
    import hashlib

    from data_prep.sources.files import download

    payload = np.random.default_rng(0).bytes(300_000)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "dl" / "dev-clean.tar.gz"
    server = _RangeServer(payload, stall_after=100_000)
    try:
        with pytest.raises(SourceError, match=r"stalled .*100000 bytes kept in .*\.part, run the command again"):
            download(server.url, dest, digest, timeout_s=1.0)
        assert (dest.parent / "dev-clean.tar.gz.part").stat().st_size == 100_000 and not dest.exists()
        server.stall_after = None
        assert download(server.url, dest, digest, timeout_s=5.0) == dest
        assert server.ranges == [0, 100_000]  # the second request asked for the rest only
        assert dest.read_bytes() == payload and not list(dest.parent.glob("*.part"))
    finally:
        server.close()
