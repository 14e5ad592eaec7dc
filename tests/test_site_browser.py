"""The smoke-scale site in headless Chromium, opened from disk (file://) as a reader would, with the network cut off:
every link resolves, every image loads, the claims filter narrows the rows, and a rendered notebook's equations are
typeset by the MathJax shipped with the reports.

It needs the Debian package `chromium` (/usr/bin/chromium) and the Python package `playwright` (the test extra);
Playwright is pointed at the system browser and never downloads one. Without them the test is skipped with a loud
reason, except under CI (`CI=true`, which `.ci/run` sets and where it installs chromium), where it fails instead.

The site is the one tests/test_notebooks.py renders (the session fixture `smoke_site`), so it costs only the browser's
time on top; `ADVNB_TEST_SITE=reports pytest tests/test_site_browser.py` reads an existing `make run SCALE=smoke`
instead of rendering every notebook again."""
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from advnb.workflow import site

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _missing() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (Debian: apt-get install -y chromium; .ci/run installs it)"
    return ""


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test cannot run in CI: {reason}")
        pytest.skip(f"BROWSER TEST NOT RUN: {reason}")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True, args=ARGS,
                                                   viewport={"width": 1400, "height": 1000})
        remote = []

        def only_files(route):  # a page that reaches for the network fails the test (and gets nothing)
            if route.request.url.startswith(("file:", "data:", "about:", "blob:")):
                route.continue_()
            else:
                remote.append(route.request.url)
                route.abort()
        ctx.route("**/*", only_files)
        ctx.remote_requests = remote
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def smoke(request) -> Path:
    "reports/smoke of the session's rendered site, or of ADVNB_TEST_SITE (a reports folder) when given."
    given = os.environ.get("ADVNB_TEST_SITE")
    if given:
        root = Path(given).resolve()
    else:
        root = request.getfixturevalue("smoke_site")[0]
    assert (root / "smoke" / "index.html").exists(), f"no smoke site under {root}"
    return root / "smoke"


def _local(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


@pytest.mark.slow
def test_every_page_link_and_image_of_the_site_works_offline(browser, smoke):
    t0 = time.time()
    page = browser.new_page()
    pages, seen, broken, unloaded = [smoke / "index.html"], set(), [], []
    while pages:
        p = pages.pop()
        if p in seen:
            continue
        seen.add(p)
        page.goto(p.as_uri())
        links = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
        for url in links:
            target = _local(url)
            if not url.startswith("file:") or not target.exists():
                broken.append(f"{p.name} -> {url}")
            elif "#" in url and target == p and not page.query_selector(f"[id='{unquote(urlparse(url).fragment)}']"):
                broken.append(f"{p.name} -> {url} (no such anchor)")
            elif target.suffix == ".html" and target.parent == smoke and not target.stem[:1].isdigit() \
                    and (target.stem in ("index", "claims", "foundation") or target.stem.startswith("paper-")):
                pages.append(target)  # the site's own pages are crawled; notebooks are opened in the test below
        unloaded += [f"{p.name}: {src}" for src in page.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")]
    n_img = len(list((smoke / "figures").glob("*.png")))
    print(f"browser: {len(seen)} site pages, {n_img} figures, {time.time() - t0:.1f} s")
    assert {p.name for p in seen} >= {"index.html", "claims.html", "foundation.html", *(f"paper-{k}.html" for k in "ABCDE")}
    assert not broken, f"{len(broken)} broken links, e.g. {broken[:5]}"
    assert not unloaded, f"{len(unloaded)} images did not load, e.g. {unloaded[:5]}"
    assert not browser.remote_requests, f"pages reached for the network: {browser.remote_requests[:5]}"
    # every figure of the run is on some page, so a reader can find it
    shown = "".join((smoke / n).read_text() for n in [p.name for p in seen])
    assert all(f"figures/{f.name}" in shown for f in (smoke / "figures").glob("*.png"))


@pytest.mark.slow
def test_claims_filter_narrows_the_rows(browser, smoke):
    page = browser.new_page()
    page.goto((smoke / "claims.html").as_uri())
    visible = "() => Array.from(document.querySelectorAll('#claims tbody tr')).filter(r => !r.hidden)" \
              ".map(r => [r.dataset.paper, Object.values(JSON.parse(r.dataset.verdicts))])"
    every = page.evaluate(visible)
    papers = sorted({p for p, _ in every})
    assert len(every) > 0 and len(papers) >= 2, "the smoke ledger should hold claims of several papers"
    page.select_option("#f-paper", papers[0])
    rows = page.evaluate(visible)
    assert 0 < len(rows) < len(every) and all(p == papers[0] for p, _ in rows)
    assert page.inner_text("#f-count") == f"{len(rows)} of {len(every)} claims shown"
    page.select_option("#f-paper", "")
    page.select_option("#f-verdict", "holds")
    rows = page.evaluate(visible)
    assert len(rows) < len(every) and all("holds" in v for _, v in rows)
    page.select_option("#f-scale", "smoke")
    assert page.evaluate(visible) == rows  # only smoke has been run here
    page.goto((smoke / "claims.html").as_uri() + "#paper=" + papers[-1])  # a paper page links to its claims this way
    assert {p for p, _ in page.evaluate(visible)} == {papers[-1]}


@pytest.mark.slow
def test_rendered_notebook_equations_are_typeset_from_the_reports(browser, smoke):
    for html in sorted(smoke.glob("*.html")):
        assert site.remote_resources(html.read_text()) == [], f"{html.name} loads from the network"
    page = browser.new_page()
    t0 = time.time()
    page.goto((smoke / "a1_frequency.html").as_uri())
    page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue && MathJax.Hub.queue.pending === 0"
                           " && document.querySelector('.MathJax, .MathJax_Display')", timeout=60_000)
    raw = page.evaluate("""() => {
        const withMath = Array.from(document.querySelectorAll('.jp-RenderedMarkdown'))
            .filter(e => e.querySelector('.MathJax, .MathJax_Display'));
        const text = e => { const c = e.cloneNode(true); c.querySelectorAll('code, pre, script').forEach(x => x.remove());
                            return c.textContent; };
        return [withMath.length, withMath.filter(e => text(e).includes('$')).map(e => text(e).slice(0, 120))];
    }""")
    n_math, with_dollar = raw
    print(f"browser: a1_frequency typeset in {time.time() - t0:.1f} s, {n_math} markdown cells with equations")
    assert n_math >= 3 and not with_dollar, f"raw TeX left in: {with_dollar[:3]}"
    assert not browser.remote_requests, f"pages reached for the network: {browser.remote_requests[:5]}"
