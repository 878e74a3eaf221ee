"""Rendering the book (chapter 0): Jupyter Book 1 over the executed notebooks of a run, never re-executing them.

``build_book(run_dir, out_dir)`` copies the book's sources (``book/``) into ``OUT/_build/source``, adds the run's
executed notebooks under ``chapters/`` after checking each one (status ``ok`` in ``summary.json``, the executed copy
unchanged since, every cell completed, executed with the run's scale and seed), states the run (scale, seed, folder
name) in every page's footer, and runs ``jupyter-book build --all`` with warnings as errors into ``OUT/_build/html``.
The checkout is only read: by default ``OUT`` is ``book/`` (the reader's copy, what ``make render`` makes); tests
pass a temporary folder. ``--all`` (a fresh Sphinx environment) makes every page show the run it was given, even
when another run was rendered into the same folder before.

What readers see is checked, not hoped for. The staged copies (never the run's) lose papermill's injected-parameters
cell, which prints the build machine's ``RUN_DIR``, and gain a note saying at which scale and seed the page was
executed (:func:`prepare_for_readers`); the landing page includes the run's headline results, written at render time
into ``_generated/headline.md`` (:func:`write_headline`). After the build, a page that loads anything from the
network (a CDN script: MathJax is served from ``book/_vendor/mathjax``) or shows an absolute path of the run folder
or of the repository fails the render (:func:`check_offline`, :func:`find_leaks`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from ..core.cards import Chosen, Headline
from ..core.io import ArtifactError, read_json, sha256_file
from ..core.rundir import read_summary, run_file, summary_path
from ..core.stages import stage
from .runner import REPO_ROOT

__all__ = ["build_book", "check_executed", "check_offline", "find_leaks", "headline_markdown", "prepare_for_readers",
           "stage_executed", "toc_chapters", "toc_files", "write_differences", "write_headline", "differences_markdown"]

BOOK_DIR = REPO_ROOT / "book"


def toc_files(book_dir: Path = BOOK_DIR) -> list[str]:
    """Every file the table of contents lists (root first), without suffix, relative to ``book_dir``."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for part in entry.get("parts", []):
                walk(part.get("chapters", []))
            walk(entry.get("chapters", []))
            walk(entry.get("sections", []))

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return files


def toc_chapters(book_dir: Path = BOOK_DIR) -> list[str]:
    """The notebook stems the table of contents lists (entries under ``chapters/``)."""
    return [Path(f).name for f in toc_files(book_dir) if f.startswith("chapters/")]


def check_executed(path: Path, entry: dict[str, Any], summary: dict[str, Any]) -> None:
    """Refuse an executed copy that is not the complete, successful execution ``summary.json`` records."""
    if entry.get("status") != "ok":
        raise RuntimeError(f"chapter {path.stem} is {entry.get('status')!r} in {summary_path(path.parent.parent)}, "
                           f"not 'ok': {entry.get('error')}; run it again before rendering")
    if entry.get("executed_sha256") and sha256_file(path) != entry["executed_sha256"]:
        raise ArtifactError(f"{path} changed after the run recorded it (another execution may have started); "
                            f"run chapter {path.stem[:2]} again before rendering")
    nb = read_json(path)
    papermill = nb.get("metadata", {}).get("papermill", {})
    params = papermill.get("parameters", {})
    if (params.get("SCALE"), params.get("SEED")) != (summary["scale"], summary["seed"]):
        raise ArtifactError(f"{path} was executed with SCALE={params.get('SCALE')}, SEED={params.get('SEED')}, "
                            f"not the run's SCALE={summary['scale']}, SEED={summary['seed']}")
    unfinished = [i for i, c in enumerate((c for c in nb["cells"] if c["cell_type"] == "code"), start=1)
                  if c.get("metadata", {}).get("papermill", {}).get("status") != "completed"]
    if unfinished or papermill.get("exception") or not papermill.get("end_time"):
        raise ArtifactError(f"{path} is an incomplete execution (code cells {unfinished[:5]} did not complete); "
                            f"run chapter {path.stem[:2]} again before rendering")


def stage_executed(run_dir: str | os.PathLike, source_dir: Path, book_dir: Path = BOOK_DIR) -> list[Path]:
    """Copy the run's checked executed notebooks into ``source_dir/chapters``; fail clearly if one is missing."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    target = source_dir / "chapters"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for stem in toc_chapters(book_dir):
        entry = summary["chapters"].get(stem)
        if entry is None:
            raise FileNotFoundError(f"chapter {stem} was not executed in {run_dir}; run the pipeline first")
        executed = run_dir / entry["executed"]
        if not executed.exists():
            raise FileNotFoundError(f"{executed} is missing; run chapter {stem[:2]} again before rendering")
        check_executed(executed, entry, summary)
        staged = target / f"{stem}.ipynb"
        nb = prepare_for_readers(read_json(executed), summary, run_dir.resolve().name)
        staged.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        copied.append(staged)
    return copied


def prepare_for_readers(nb: dict[str, Any], summary: dict[str, Any], run_name: str) -> dict[str, Any]:
    """The staged copy of an executed chapter as readers see it: papermill's injected-parameters cell (it shows
    the build machine's absolute ``RUN_DIR``) replaced by a note that says at which scale and seed (and with which
    further ``-p`` parameters) the page was executed, and papermill's absolute paths in the metadata reduced to
    names. ``nb`` is a parsed notebook; a changed copy is returned."""
    nb = json.loads(json.dumps(nb))
    params = nb.get("metadata", {}).get("papermill", {}).get("parameters", {})
    cells = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    at = tagged[0] + 1 if tagged else 1
    nb["cells"] = cells[:at] + [_executed_at_note(params, summary, run_name)] + cells[at:]
    papermill = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if papermill.get(key):
            papermill[key] = Path(papermill[key]).name
    if "RUN_DIR" in params:
        params["RUN_DIR"] = run_name
    return nb


def _executed_at_note(params: dict[str, Any], summary: dict[str, Any], run_name: str) -> dict[str, Any]:
    """The markdown cell that takes the injected-parameters cell's place."""
    extra = ", ".join(f"`{k}={v!r}`" for k, v in params.items() if k not in ("SCALE", "SEED", "RUN_DIR"))
    text = (f"```{{note}}\nThis page shows the chapter executed at **`SCALE=\"{summary['scale']}\"`** with "
            f"**`SEED={summary['seed']}`**{' and ' + extra if extra else ''}, as part of the run `{run_name}` "
            f"(last updated {summary.get('updated', summary.get('created', '?'))}). The runner set these "
            f"parameters and `RUN_DIR`, in place of the defaults in the cell above; every number below is from "
            f"that execution.\n```")
    return {"cell_type": "markdown", "id": "executed-at", "metadata": {}, "source": text}


def build_book(run_dir: str | os.PathLike, book_dir: Path = BOOK_DIR, out_dir: str | os.PathLike | None = None) -> Path:
    """Stage the book's sources and the run's executed notebooks, build the HTML book; return ``index.html``.

    Everything is written under ``out_dir/_build`` (default: ``book_dir``); ``book_dir`` itself is only read. The
    render happens in a hidden folder beside it and replaces ``_build`` only once it is complete and fit for
    readers, so an interrupted or failed render (Ctrl-C, a broken page) leaves the previous book as it was and
    nothing half-built. A complete render that is not fit for readers (a page that loads from the network or shows
    a build machine's path) is kept in ``out_dir/_build.rejected`` for inspection, and the error says so.
    """
    run_dir, book_dir = Path(run_dir), Path(book_dir)
    out = Path(out_dir) if out_dir is not None else book_dir
    read_summary(run_dir)  # a missing or foreign summary: one line, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".render-"))
    try:
        problems = _render(run_dir, book_dir, staging)
        if problems:
            _replace_dir(staging / "_build", out / "_build.rejected")
            raise ArtifactError(f"the rendered book is not fit for readers ({out / '_build.rejected'} holds it): "
                                f"{len(problems)} problem(s): {'; '.join(problems[:6])}")
        _replace_dir(staging / "_build", out / "_build")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "_build" / "html" / "index.html"


def _render(run_dir: Path, book_dir: Path, out: Path) -> list[str]:
    """The whole render into ``out/_build`` (sources, executed chapters, jupyter-book); what the readers' checks
    found wrong with it (pages that load from the network, paths of the build machine)."""
    source = out / "_build" / "source"
    shutil.copytree(book_dir, source, ignore=shutil.ignore_patterns("_build", "chapters", ".*"))
    stage_executed(run_dir, source, book_dir)
    _state_the_run(source / "_config.yml", run_dir)
    write_headline(run_dir, source)
    write_differences(run_dir, source)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(source), "--path-output", str(out), "--builder", "html", "--all",
           "--warningiserror", "--keep-going"]
    subprocess.run(cmd, check=True)
    index = out / "_build" / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"the build did not produce {index}")
    return check_offline(index.parent) + find_leaks(index.parent, [run_dir.resolve(), REPO_ROOT, out.resolve()])


def _replace_dir(new: Path, target: Path) -> None:
    """Put the folder ``new`` in the place of ``target`` (two renames; the old one is deleted after)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


class _Assets(HTMLParser):
    """The URLs a page loads by itself (scripts, stylesheets, images, media, frames), not the links it shows."""

    LOADS = {"script": "src", "img": "src", "audio": "src", "video": "src", "source": "src", "iframe": "src",
             "embed": "src", "link": "href"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        key = self.LOADS.get(tag)
        if key is None or not attr.get(key):
            return
        if tag == "link" and not set((attr.get("rel") or "").split()) & {"stylesheet", "preload", "icon",
                                                                          "modulepreload", "prefetch"}:
            return  # <link rel="next"> and the like are navigation, not loads
        self.urls.append(attr[key])


def check_offline(html_dir: str | os.PathLike) -> list[str]:
    """Every asset a page of ``html_dir`` would load from the network (``page: url``); empty when the book
    renders offline (equations included: MathJax must come from ``_static``)."""
    html_dir = Path(html_dir)
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        problems += [f"{page.relative_to(html_dir)} loads {url} from the network" for url in parser.urls
                     if re.match(r"^(https?:)?//", url.strip(), re.I)]
    return problems


def find_leaks(html_dir: str | os.PathLike, paths: list[str | os.PathLike]) -> list[str]:
    """Files of the rendered book that show one of ``paths`` (absolute paths of the build machine: the run folder,
    the repository); a path counts only as a whole path component sequence, not inside a longer name."""
    html_dir = Path(html_dir)
    needles = sorted({str(Path(p)) for p in paths if len(str(Path(p))) > 1}, key=len, reverse=True)
    patterns = [(n, re.compile(rb"(?<![\w./-])" + re.escape(n.encode()) + rb"(?![\w.-])")) for n in needles]
    problems = []
    for path in sorted(p for p in html_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for needle, pattern in patterns:
            if pattern.search(data):
                problems.append(f"{path.relative_to(html_dir)} shows the build machine's path {needle}")
                break
    return problems


def _state_the_run(config: Path, run_dir: Path) -> None:
    """Put the run's scale, seed, folder name and date into every page's footer (the folder's name, not its path)."""
    summary = read_summary(run_dir)
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc.setdefault("html", {})["extra_footer"] = (
        f"<p>Rendered from the run <code>{run_dir.resolve().name}</code>: SCALE={summary['scale']}, "
        f"SEED={summary['seed']}, last updated {summary.get('updated', summary.get('created', '?'))}.</p>")
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


# ------------------------------------------------------------------------------------------ the landing page's results
PUBLISHED = ("The papers' own figures, on their data and their phones (not measured here): ERSAM reports 14.3 % "
             "error on LibriSpeech-SAM at 0.05 s per 5-s segment on a Pixel 3 {cite}`ersam2023`; the published "
             "CountNet reaches a MAE of 0.27 (CRNN) and 0.36 (F-CRNN) on LibriCount's test set "
             "{cite}`stoter2019countnet`; Speckhard et al.'s searched net uses 1.27 mJ per inference at 71.2 % "
             "accuracy on a Pixel 4 XL {cite}`speckhard2022`.")


def write_headline(run_dir: str | os.PathLike, source_dir: str | os.PathLike) -> Path:
    """Write ``source_dir/_generated/headline.md`` (and the frontier figure beside it) from the run's summary and
    chapter 5's ``frontier.csv``; the landing page includes it. Returns the markdown file."""
    run_dir, gen = Path(run_dir), Path(source_dir) / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    figure = None
    frontier = run_file(run_dir, "frontier")
    if frontier.exists():
        _plot_frontier(_read_frontier(frontier), gen / "frontier.png")
        figure = "_generated/frontier.png"
    docs = set(toc_files(Path(source_dir)))
    path = gen / "headline.md"
    path.write_text(headline_markdown(run_dir, docs, figure), encoding="utf-8")
    return path


def headline_markdown(run_dir: str | os.PathLike, docs: set[str], figure: str | None) -> str:
    """The "Headline results" text of a run: what ran, the frontier figure, the chosen models against the baselines
    (from ``frontier.csv``), chapter 6's figures when it ran, and what is missing when a chapter did not run.
    ``docs`` are the book's pages (links go only to pages that exist); ``figure`` the frontier image, if any."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    chapters = summary["chapters"]
    ok = [name for name, e in chapters.items() if e.get("status") == "ok"]
    wall = sum(e.get("wall_s", 0.0) for e in chapters.values())
    scale = summary["scale"]
    lines = [f"These are the results of the run this book was rendered from: `SCALE=\"{scale}\"`, "
             f"`SEED={summary['seed']}`, run `{run_dir.resolve().name}`, {len(ok)} chapters executed "
             f"({', '.join(n[:2] for n in ok) or 'none'}) in {wall / 60:.1f} min."]
    if scale == "smoke":
        lines.append("\nAt `smoke` scale the models train for seconds on a tiny data set: the numbers show that every "
                     "step ran, not what the method achieves. Render a `tutorial` run for results.")
    lines.append("")
    search = _chapter(chapters, "search")
    if search is None:
        lines.append("**This run has no chapter 5 (search)**: the accuracy-energy frontier and the chosen model "
                     "appear here once chapter 5 has run with the same `RUN_DIR`.")
    elif not run_file(run_dir, "frontier").exists():
        lines.append(f"**Chapter 5 ran but left no `{run_file('.', 'frontier').name}`** in `search/`: run it again.")
    else:
        lines += _frontier_section(run_dir, figure, docs)
    lines.append("")
    deploy = _chapter(chapters, "deploy")
    if deploy is None:
        lines.append("**This run has no chapter 6 (deployment)**: the quantized model's accuracy, latency and memory "
                     "appear here once chapter 6 has run with the same `RUN_DIR`.")
    elif not run_file(run_dir, "headline").exists():
        lines.append(f"**Chapter 6 ran but left no `{run_file('.', 'headline').name}`** in `deploy/`: run it again.")
    else:
        lines += _deploy_section(Headline.load(run_dir))
    lines += ["", PUBLISHED + (" {doc}`/differences` sets them beside this run's." if "differences" in docs else "")]
    if "paper_scale" in docs:
        lines += ["", "To run the book at full size, on LibriSpeech and a GPU, see {doc}`/paper_scale`."]
    return "\n".join(lines) + "\n"


def _chapter(chapters: dict[str, Any], label: str) -> dict[str, Any] | None:
    """The summary entry of the stage ``label`` when it ran ``ok``."""
    entry = chapters.get(stage(label).notebook)
    return entry if entry is not None and entry.get("status") == "ok" else None


def _chosen(run_dir: Path) -> Chosen:
    """Chapter 5's choice, or none when the run has no ``chosen.json``."""
    return Chosen.load(run_dir) if run_file(run_dir, "chosen").exists() else Chosen(None, None)


def _read_frontier(path: Path) -> Any:
    import pandas as pd  # imported here: the CLI's other commands start without pandas

    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable frontier table ({exc}); run chapter 05 again") from None


def _frontier_section(run_dir: Path, figure: str | None, docs: set[str]) -> list[str]:
    table = _read_frontier(run_file(run_dir, "frontier"))
    chosen = _chosen(run_dir)
    roles: dict[str, str] = {}
    for name, role in ((chosen.budget, "chosen within the default energy budget"),
                       (chosen.most_accurate, "most accurate searched")):
        if name:
            roles[name] = "; ".join(filter(None, (roles.get(name), role)))
    where = "{doc}`/chapters/05_search`" if "chapters/05_search" in docs else "chapter 5"
    lines = []
    if figure:
        lines += [f"```{{figure}} {figure}", ":name: fig-headline-frontier",
                  ":alt: Test error against energy per 5-s segment (log scale) for the searched finalists and the "
                  "baselines of this run.", ":width: 80%", "",
                  f"Test error against energy per 5-s segment of the searched finalists and the baselines, from "
                  f"{where}. Energy is predicted by this machine's cost model and calibrated to the phone scale; "
                  f"lower left is better.", "```", ""]
    latency = next((c for c in ("measured_eager_min_ms", "latency_ms") if c in table.columns), None)
    how = ("measured on this machine, fastest of the repeats, one thread" if latency == "measured_eager_min_ms"
           else "predicted by chapter 2's cost model")
    cols = [("test error", "error", "{:.1%}"), ("MAE", "mae", "{:.3f}"), ("latency (ms)", latency, "{:.2f}"),
            ("energy (mJ)", "energy_mj", "{:.2f}"), ("parameters", "params", "{:,.0f}")]
    cols = [c for c in cols if c[1] in table.columns]
    rows = [r for r in table.to_dict("records") if r.get("name") in roles or r.get("kind") == "baseline"]
    order = list(roles)  # the chosen model first, then the most accurate, then the baselines from the best
    rows.sort(key=lambda r: (order.index(r["name"]) if r["name"] in roles else len(order), r.get("error", 0.0)))
    lines += ["| model | role | " + " | ".join(c[0] for c in cols) + " |",
              "|---|---|" + "---:|" * len(cols)]
    for r in rows:
        role = roles.get(r["name"], r.get("kind", ""))
        cells = [_cell(fmt, r.get(key)) for _, key, fmt in cols]
        lines.append(f"| `{r['name']}` | {role} | " + " | ".join(cells) + " |")
    frontier = run_file(".", "frontier")
    lines += ["", f"Test-split scores of this run, all models trained on the same data and measured with the same "
                  f"protocol ({len(table)} rows in `{frontier.parent.name}/{frontier.name}`). Latency per 5-s segment: "
                  f"{how}; energy per 5-s segment: predicted and calibrated to the phone scale."]
    return lines


def _deploy_section(h: Headline) -> list[str]:
    """Chapter 6's headline (:class:`~ersam_lib.core.cards.Headline`) as a table."""
    def pair(a: float | None, b: float | None, fmt: str) -> str:
        return "not in this run" if a is None or b is None else f"{fmt.format(a)} / {fmt.format(b)}"

    role = {"budget": "chapter 5's choice within the default energy budget",
            "most_accurate": "chapter 5's most accurate searched model"}.get(h.role, h.role)
    rttm = ("not in this run" if h.rttm_accuracy is None else
            f"{h.rttm_accuracy:.1%} exact counts, MAE {h.rttm_mae:.2f} speakers")
    return ["Chapter 6 deployed it as an int8 program with the audio front end inside:", "",
            "| | this run |", "|---|---:|", f"| deployed model | `{h.model}` ({role}) |",
            f"| test accuracy, float / int8 | {pair(h.test_acc, h.int8_test_acc, '{:.1%}')} |",
            f"| `real_test` accuracy, float / int8 | {pair(h.real_test_acc, h.int8_real_test_acc, '{:.1%}')} |",
            f"| int8 ExecuTorch program, latency per 5-s window (one thread) | {h.latency_ms:.2f} ms |",
            f"| its size / peak memory | {h.size_kb:,.0f} kB / {h.peak_mb:.1f} MB |",
            f"| streaming meter | {h.meter_speed_x:,.0f}x real time |",
            f"| annotated conversation (RTTM) | {rttm} |"]


# ------------------------------------------------------------------ "What differs from the paper": this run's column
E0_MJ = 1.25  # Speckhard et al.'s energy threshold per inference (chapter 5's reward)


def write_differences(run_dir: str | os.PathLike, source_dir: str | os.PathLike) -> Path:
    """Write ``source_dir/_generated/differences.md``: the papers' figures beside the rendered run's (the page
    ``differences.md`` includes it), so that the table always shows the run the book was built from."""
    path = Path(source_dir) / "_generated" / "differences.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(differences_markdown(run_dir), encoding="utf-8")
    return path


def differences_markdown(run_dir: str | os.PathLike) -> str:
    """The table "the paper | this run", each cell of this run read from its summary and chapter 5's tables; a
    figure the run did not produce says so (``not in this run``)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    m = {label: (_chapter(summary["chapters"], label) or {}).get("metrics", {}) for label in ("supernet", "search")}
    frontier = run_file(run_dir, "frontier")
    table = _read_frontier(frontier) if frontier.exists() else None
    chosen = _chosen(run_dir)
    rows = {} if table is None else {r["name"]: r for r in table.to_dict("records")}
    pick = rows.get(chosen.budget) or rows.get(chosen.most_accurate)
    missing = "not in this run"
    cells = {
        "ersam_error": missing if pick is None else (
            f"{pick['error']:.1%} (synthetic test) / {1 - pick['real_acc']:.1%} (`real_test`), `{pick['name']}`"),
        "ersam_latency": missing if pick is None else (
            f"{pick['latency_ms']:.3f} ms through ExecuTorch (build CPU, one thread)"),
        "ersam_energy": missing if pick is None else f"{pick['energy_mj']:.2f} mJ per segment (calibrated estimate)",
        "speckhard": _within_e0(table) if table is not None else missing,
        "mobilenet": _baseline_cell(rows.get("mobilenetv2"), memory=True),
        "countnet": _countnet_cell(m["search"], rows),
        "tcresnet": "; ".join(f"{n}: {_baseline_cell(rows.get(n))}" for n in ("tcresnet8", "tcresnet14")),
        "distill": _distill_cell(m["supernet"]),
        "scale": f"`SCALE=\"{summary['scale']}\"`, `SEED={summary['seed']}`",
    }
    lines = [f"This run: {cells['scale']}, run `{run_dir.resolve().name}`.", "",
             "| system and figure | the paper (their data, their device) | this book (this run, build machine) |",
             "|---|---|---|",
             f"| ERSAM: error on LibriSpeech-SAM {{cite}}`ersam2023` | 14.3 % (Pixel 3) | {cells['ersam_error']} |",
             f"| ERSAM: latency per 5-s segment | 0.05 s (Pixel 3) | {cells['ersam_latency']} |",
             "| ERSAM: energy | 40 mW over 12 h (about 1.7 kJ, about 0.2 J per segment) | "
             f"{cells['ersam_energy']} |",
             "| Speckhard et al.: searched net {cite}`speckhard2022` | 1.27 mJ per inference, 53.6 kB, 71.2 % "
             f"accuracy (Pixel 4 XL) | {cells['speckhard']} |",
             f"| Speckhard et al.: MobileNetV2 | 13.9 mJ, 2.7 MB, 70.3 % | {cells['mobilenet']} |",
             "| CountNet on LibriCount test {cite}`stoter2019countnet` | MAE 0.27 (CRNN, 0.35 M parameters), 0.36 "
             f"(F-CRNN, 0.06 M), 0.38 (RNN) | {cells['countnet']} |",
             "| HEAR 2021 LibriCount probes {cite}`turian2022hear` | top-1 accuracy 0.795 (BYOL-S), 0.686 (wav2vec2) | "
             "not run here (no pretrained embeddings offline) |",
             "| TC-ResNet8 / TC-ResNet14 {cite}`choi2019tcresnet` | about 66 k / 137 k parameters | "
             f"{cells['tcresnet']} |",
             "| Uncertainty-gated distillation (ERSAM) | teacher queried only where the student is uncertain, accuracy "
             f"kept | {cells['distill']} |"]
    if summary["scale"] == "smoke":
        lines += ["", "At `smoke` scale these numbers only show that every step ran."]
    return "\n".join(lines) + "\n"


def _baseline_cell(row: dict[str, Any] | None, memory: bool = False) -> str:
    if row is None:
        return "not in this run"
    text = f"{row['params']:,.0f} parameters, test accuracy {row['acc']:.1%}, `real_test` {row['real_acc']:.1%}"
    if memory:
        text = f"{row['energy_mj']:.1f} mJ (calibrated), {row['memory_kb']:.0f} kB int8 weights, " + text
    return text


def _within_e0(table: Any) -> str:
    searched = table[table["kind"] == "searched"]
    fits = searched[searched["energy_mj"] <= E0_MJ]
    if fits.empty:
        low = searched.loc[searched["energy_mj"].idxmin()] if len(searched) else None
        return ("no searched finalist within 1.25 mJ" + ("" if low is None else
                f"; the cheapest uses {low['energy_mj']:.2f} mJ, {low['memory_kb']:.1f} kB, {low['acc']:.1%}"))
    best = fits.loc[fits["acc"].idxmax()]
    return (f"{best['energy_mj']:.2f} mJ (calibrated), {best['memory_kb']:.1f} kB int8 weights, test accuracy "
            f"{best['acc']:.1%} (`real_test` {best['real_acc']:.1%})")


def _countnet_cell(search: dict[str, Any], rows: dict[str, Any]) -> str:
    parts = [f"published {name.replace('CountNet ', '').replace(' (published)', '')} on `real_test`: MAE "
             f"{search['peer_real_test_mae'][name]:.2f}, accuracy {acc:.1%}"
             for name, acc in search.get("peer_real_test_acc", {}).items()]
    parts += [f"`{n}` trained here: test MAE {rows[n]['mae']:.2f}, `real_test` MAE {rows[n]['real_mae']:.2f}"
              for n in ("countnet_crnn", "countnet_fcrnn") if n in rows]
    return "; ".join(parts) or "not in this run"


def _distill_cell(supernet: dict[str, Any]) -> str:
    if "final_variant" not in supernet:
        return "not in this run"
    return (f"`{supernet['final_variant']}`: {supernet['final_query_rate']:.0%} of the samples sent to the teacher; "
            f"largest subnet {supernet['final_minus_full_acc_largest'] * 100:+.1f} points and smallest "
            f"{supernet['final_minus_full_acc_smallest'] * 100:+.1f} points against full distillation (validation)")


def _cell(fmt: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return html.escape(str(value))


def _plot_frontier(table: Any, path: Path) -> None:
    """Test error against energy per segment: searched finalists joined in order of energy, baselines labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    searched = table[table["kind"] == "searched"].sort_values("energy_mj")
    others = table[table["kind"] != "searched"]
    ax.plot(searched["energy_mj"], searched["error"], "o-", color="C0", label="searched finalists")
    ax.plot(others["energy_mj"], others["error"], "s", color="C3", label="baselines")
    for r in others.itertuples():
        ax.annotate(str(r.name), (r.energy_mj, r.error), textcoords="offset points", xytext=(4, 3), fontsize=8)
    energy = table["energy_mj"]
    if (energy > 0).all() and energy.max() > 10 * energy.min():  # a log axis only where it spans decades
        ax.set_xscale("log")
    ax.set_xlabel("energy per 5-s segment (mJ, calibrated)")
    ax.set_ylabel("test error")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
