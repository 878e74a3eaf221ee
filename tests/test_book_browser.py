"""The browser check (issue 15): the smoke run's rendered book, served on localhost and opened page by page in
headless Chromium (Debian's ``chromium``, driven by Playwright, which never downloads a browser of its own).

Every page loads without a JavaScript exception or a failed request; nothing is fetched from outside localhost
(equations included: MathJax comes from the book's static files, and every formula is typeset without error); every
image is present and decodes to a non-empty picture; no execution error or traceback shows; the audio players of
the chapters that have them load their sound; every widget keeps a static rendering of its default answer; every
internal link (and its anchor) resolves; no page shows the absolute path of the run folder it was built from.

The test installs what it needs (``apt-get install chromium`` as root, ``pip install playwright``) and is skipped,
saying so, only when no package registry is reachable.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# sphinx-thebe 0.3.1 puts its inline configuration script on each page twice under Sphinx 7; the second copy throws
# this on every page. Harmless here: the book has no launch button, so thebe never starts.
KNOWN_PAGE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
AUDIO_CHAPTERS = ("00_setup", "01_data")  # chapters that play sounds to the reader

PAGE_FACTS = """async () => {
  const images = await Promise.all([...document.images].map(img => {
    img.loading = 'eager';  // lazy images would not load in a page nobody scrolls
    return img.decode().then(() => [img.getAttribute('src'), img.naturalWidth, img.naturalHeight],
                             () => [img.getAttribute('src'), 0, 0]);
  }));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const audio = await Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(done => {
    if (a.readyState >= 1) { done(a.duration); return; }
    a.addEventListener('loadedmetadata', () => done(a.duration));
    a.addEventListener('error', () => done(-1));
    setTimeout(() => done(-2), 10000);
    a.load();
  })));
  return {
    images, audio,
    math: document.querySelectorAll('.math').length,
    typeset: document.querySelectorAll('.math mjx-container').length,
    math_errors: document.querySelectorAll('mjx-merror').length,
    tracebacks: document.querySelectorAll('.traceback, .output.error').length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    text: document.body.innerText,
    html: document.documentElement.outerHTML,
  };
}"""


# ------------------------------------------------------------------------------------------------ installing the tools
def _registry_unreachable(output: str) -> bool:
    words = ("Temporary failure", "Could not resolve", "Failed to fetch", "Network is unreachable",
             "Connection refused", "NewConnectionError", "No matching distribution", "Could not find a version")
    return any(w in output for w in words)


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when it is missing (as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("chromium is missing and cannot be installed here (needs root and apt-get): "
                    "apt-get install -y chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        out = done.stdout + done.stderr
        if done.returncode != 0 or (cmd[1] == "update" and "Failed to fetch" in out):
            if _registry_unreachable(out):
                pytest.skip(f"no package registry reachable, cannot install chromium: {out.strip()[-300:]}")
            pytest.fail(f"{' '.join(cmd)} failed: {out.strip()[-1000:]}")
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but it is not on PATH")


def _playwright() -> None:
    """The playwright package (a dev dependency), installed with pip when it is missing; never its browsers."""
    try:
        import playwright.sync_api  # noqa: F401
        return
    except ImportError:
        pass
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        out = done.stdout + done.stderr
        if _registry_unreachable(out):
            pytest.skip(f"no package registry reachable, cannot install playwright: {out.strip()[-300:]}")
        pytest.fail(f"pip install playwright failed: {out.strip()[-1000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    chromium = _chromium()
    _playwright()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # the test reports what matters itself
        pass


@contextlib.contextmanager
def _serve(folder: Path) -> Iterator[str]:
    """``folder`` on an ephemeral localhost port; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------------- the page visits
def _pages(html: Path) -> list[str]:
    """Every HTML page of the book (not the theme's files), relative to the html folder."""
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


def _visit(context: object, url: str, redirects: bool) -> tuple[dict, list[str]]:
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: None if any(k in str(e) for k in KNOWN_PAGE_ERRORS)
            else problems.append(f"JavaScript error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} for {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.goto(url, wait_until="load")
    if redirects:  # index.html sends readers on to the landing page: look at where it leads
        page.wait_for_url(lambda u: u != url)
        page.wait_for_load_state("load")
    facts = page.evaluate(PAGE_FACTS)
    page.close()
    return facts, problems


def _widget_static_texts(notebook: Path) -> list[str]:
    """First printed line of every cell that shows a widget: its static answer, which the page must show."""
    texts = []
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        outputs = cell.get("outputs", [])
        if not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs):
            continue
        printed = ["".join(o["text"]).strip() for o in outputs if o.get("output_type") == "stream"]
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert printed or figures, f"{notebook.name}: a widget cell without a static rendering of its default state"
        texts += [p.splitlines()[0] for p in printed if p]
    return texts


def _audio_count(notebook: Path) -> int:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return sum("<audio" in "".join(o.get("data", {}).get("text/html", ""))
               for c in nb["cells"] for o in c.get("outputs", []))


def _check_links(html: Path, links: set[str], base: str) -> list[str]:
    """Internal links whose page or anchor does not exist."""
    broken, texts = [], {}
    for link in sorted(links):
        if not link.startswith(base):
            continue  # an external link is shown, not loaded; the offline check is about loads
        parts = urlsplit(link)
        rel = unquote(parts.path)[len(urlsplit(base).path):] or "index.html"
        target = html / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{link}: no such file")
            continue
        if parts.fragment and target.suffix == ".html":
            text = texts.setdefault(target, target.read_text(encoding="utf-8", errors="replace"))
            if f'id="{unquote(parts.fragment)}"' not in text:
                broken.append(f"{link}: no anchor #{parts.fragment}")
    return broken


def book_problems(browser: object, html: Path, staged: Path, run_path: str, pages: list[str] | None = None
                  ) -> list[str]:
    """Everything wrong with the rendered book in ``html`` (or with ``pages`` of it), opened in ``browser``;
    ``staged`` holds the executed notebooks it was rendered from, ``run_path`` the run folder's absolute path."""
    failures, links, outside = [], set(), []
    with _serve(html) as base:
        context = browser.new_context()

        def route(r: object) -> None:
            if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        for rel in pages or _pages(html):
            redirects = 'http-equiv="refresh"' in (html / rel).read_text(encoding="utf-8").lower()
            facts, problems = _visit(context, base + rel, redirects)
            links |= set(facts["links"])
            failures += [f"{rel}: {p}" for p in problems + _page_problems(facts, rel, staged, run_path)]
        context.close()
        failures += [f"link {b}" for b in _check_links(html, links, base)]
    return failures + [f"loaded from outside localhost: {u}" for u in sorted(set(outside))]


def _page_problems(facts: dict, rel: str, staged: Path, run_path: str) -> list[str]:
    problems = [f"image not displayed: {src}" for src, width, height in facts["images"] if width * height == 0]
    if facts["typeset"] < facts["math"] or facts["math_errors"]:
        problems.append(f"equations: {facts['typeset']} of {facts['math']} typeset, {facts['math_errors']} errors")
    if facts["tracebacks"] or "Traceback (most recent call last)" in facts["text"]:
        problems.append("an execution error or traceback is shown")
    if run_path in facts["html"]:
        problems.append(f"shows the run folder's absolute path {run_path}")
    if not rel.startswith("chapters/"):
        return problems
    stem = Path(rel).stem
    notebook = staged / f"{stem}.ipynb"
    if not facts["images"]:
        problems.append("a chapter without a single figure")
    expected_audio = _audio_count(notebook)
    if stem in AUDIO_CHAPTERS and expected_audio == 0:
        problems.append("the chapter's audio players are missing from its executed notebook")
    playable = [d for d in facts["audio"] if d and d > 0]
    if len(playable) < expected_audio:
        problems.append(f"{len(playable)} of {expected_audio} audio players load their sound "
                        f"(durations {facts['audio']})")
    problems += [f"widget's static answer missing: {t!r}" for t in _widget_static_texts(notebook)
                 if t not in facts["text"]]
    if "This page shows the chapter executed at" not in facts["text"]:
        problems.append("no note saying at which scale and seed the page was executed")
    return problems


def test_every_page_of_the_smoke_book_in_headless_chromium(browser: object, smoke_book: Path,
                                                           smoke_run_dir: Path) -> None:
    staged = smoke_book.parent / "source" / "chapters"
    pages = _pages(smoke_book)
    assert "index.html" in pages and "intro.html" in pages
    assert len([p for p in pages if p.startswith("chapters/")]) == len(list(staged.glob("*.ipynb")))
    failures = book_problems(browser, smoke_book, staged, str(smoke_run_dir.resolve()))
    assert not failures, "\n".join(failures)


def test_the_browser_check_sees_what_a_reader_would_miss(browser: object, smoke_book: Path, smoke_run_dir: Path,
                                                         tmp_path: Path) -> None:
    """The same check on a damaged copy of the book reports each damage (so its silence above means something)."""
    html = Path(shutil.copytree(smoke_book, tmp_path / "html"))
    staged = smoke_book.parent / "source" / "chapters"
    run_path = str(smoke_run_dir.resolve())
    intro, setup = html / "intro.html", html / "chapters" / "00_setup.html"
    extra = (f'<script src="https://cdn.example.invalid/mathjax.js"></script><p>{run_path}/data</p>'
             f'<a href="chapters/00_setup.html#no-such-anchor">x</a><a href="missing.html">y</a></body>')
    intro.write_text(intro.read_text(encoding="utf-8").replace("</body>", extra), encoding="utf-8")
    first_image = next(p for p in (html / "_images").glob("*.png") if p.name in setup.read_text(encoding="utf-8"))
    first_image.write_bytes(b"")
    text = setup.read_text(encoding="utf-8")
    assert "base64,UklGR" in text  # the players' WAV data ("RIFF")
    text = text.replace("This page shows the chapter executed at", "This page").replace("base64,UklGR", "base64,AAAA")
    setup.write_text(text, encoding="utf-8")
    for font in (html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("MathJax_Main-*"):
        font.unlink()
    found = "\n".join(book_problems(browser, html, staged, run_path, ["intro.html", "chapters/00_setup.html"]))
    for damage in ("loaded from outside localhost: https://cdn.example.invalid/mathjax.js",
                   "intro.html: shows the run folder's absolute path", "no anchor #no-such-anchor",
                   "missing.html: no such file", f"image not displayed: ../_images/{first_image.name}",
                   "chapters/00_setup.html: no note saying at which scale and seed", "HTTP 404", "MathJax_Main",
                   "audio players load their sound"):
        assert damage in found, f"the check missed: {damage}\n{found}"
