"""The dashboard in Debian's chromium (Playwright), against a running stack.

An operator's session: log in, submit a simulated observation from the page, watch
its run complete live (no reload), look at the quick-look image and read the
position; a failed run shows its reason; the runs page with 1,000 runs in the
database loads one page, and the browser's own timing is printed.

Logins and roles: a wrong password is said in the login dialog (the 401 carries no
``WWW-Authenticate``, so the browser shows no prompt of its own); a scientist reads
but is offered no submit or cancel, and a forced one is refused (403) in words; an
operator submits. Every page of every test runs under the dashboard's
Content-Security-Policy: a violation in the console fails the test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT = 120  # seconds: a hang guard only; lazy functions start cold on a busy machine
COMMITTED_SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
RUN_TIMEOUT_MS = 240_000  # a cold ToO chain on two cores, all functions starting


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


CSP_MARK = "Content Security Policy"  # in every message Chromium logs for a violation


@pytest.fixture()
def csp_violations() -> list[str]:
    """The CSP violations the browser reported on the test's page (console errors)."""
    return []


@pytest.fixture()
def page(browser: Any, frontend_stack: Any, csp_violations: list[str]) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1366, "height": 900}, base_url=frontend_stack.url
    )
    context.set_default_timeout(90_000)  # a hang guard: two cores shared with other work
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: csp_violations.append(m.text) if CSP_MARK in m.text else None)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not csp_violations, f"Content-Security-Policy violations: {csp_violations}"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages are photographed: a temporary folder, unless asked for the README's.

    ``MXT_UPDATE_SCREENSHOTS=1`` rewrites the committed ``docs/screenshots/*.png``;
    otherwise a test run leaves the checkout clean.
    """
    if os.environ.get("MXT_UPDATE_SCREENSHOTS") == "1":
        COMMITTED_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return COMMITTED_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def _log_in(page: Any, password: str, user: str = "admin") -> None:
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.locator("#login-submit").click()
    page.get_by_role("button", name="Log out").wait_for()


def _simulated_l0(tmp_path: Path, without: str | None = None) -> tuple[Path, str]:
    """A small simulated ToO observation (optionally lacking one extension) and its id."""
    from bricks.simulate import simulate
    from local.chainkit import afterglow_scene

    obs_id = f"ui{uuid.uuid4().hex[:8]}"
    l0, _ = simulate(afterglow_scene(obs_id))
    if without is not None:
        del l0[without]
    path = tmp_path / f"{obs_id}_mxt_l0.fits"
    l0.writeto(path)
    return path, obs_id


def _position_product(stack: Any, run_id: str) -> dict[str, Any]:
    products = httpx.get(f"{stack.url}/mxt/runs/{run_id}/products", timeout=HTTP_TIMEOUT).json()[
        "items"
    ]
    position = next(p for p in products if p["name"] == "position")
    params = {"bucket": position["bucket"], "key": position["key"]}
    return httpx.get(
        f"{stack.url}/function/objects-download", params=params, timeout=HTTP_TIMEOUT
    ).json()


def test_submit_watch_run_complete_live_and_read_position(
    page, frontend_stack, tmp_path, screenshots
):
    l0_path, obs_id = _simulated_l0(tmp_path)
    page.goto("/ui/")
    page.locator("#feed-status[data-state=on]").wait_for()
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    _log_in(page, frontend_stack.password)

    page.get_by_label("L0 file").set_input_files(str(l0_path))
    page.locator("#submit-info", has_text=obs_id).wait_for()
    page.get_by_role("button", name="Submit observation").click()
    row = page.locator(f'#runs-body tr[data-obs="{obs_id}"]')
    row.wait_for(timeout=RUN_TIMEOUT_MS)  # the run appears through the websocket
    run_id = row.get_attribute("data-run")
    row.get_by_role("link").click()

    state = page.locator("#run-state .badge")
    page.wait_for_function(
        "() => ['succeeded', 'failed', 'cancelled'].includes("
        "document.querySelector('#run-state .badge')?.dataset.state)",
        timeout=RUN_TIMEOUT_MS,
    )
    reason = page.locator("#run-reason").inner_text()
    assert state.get_attribute("data-state") == "succeeded", reason
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    # every DAG node reached its final state live
    assert page.locator("svg.dag g.node").count() >= 10
    assert (
        page.locator("svg.dag g.node.state-succeeded").count()
        == page.locator("svg.dag g.node").count()
    )

    image = page.locator("#img-ql_image")
    image.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('#img-ql_image'); return i && i.complete; }"
    )
    assert image.evaluate("img => img.naturalWidth") > 0

    page.locator("#position-text").wait_for()
    shown = page.locator("#position-text").inner_text()
    truth = _position_product(frontend_stack, run_id)
    print(f"\nposition shown for {run_id}: {shown}")
    assert f"RA {truth['ra']:.4f}°" in shown
    assert f"{truth['dec']:+.4f}°" in shown
    assert f"± {truth['err90_arcsec']:.1f}″" in shown
    assert page.locator("button[data-notice=notice_json]").count() == 1

    # every FITS product has a working download link
    fits_links = page.locator('#products-body a[href*=".fits"], #products-body a[href*=".pha"]')
    assert fits_links.count() >= 5
    for href in fits_links.evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        download = httpx.get(frontend_stack.url + href, timeout=HTTP_TIMEOUT)
        assert download.status_code == 200, href
        assert download.content[:6] == b"SIMPLE", href

    page.screenshot(path=str(screenshots / "run.png"), full_page=True)


def test_failed_run_shows_its_reason(page, frontend_stack, tmp_path, screenshots):
    from storage.local import LocalObjectStore

    # an L0 file whose primary header is fine but that lacks its EVENTS table: the run
    # starts, and its ingest step fails for good with the reason
    l0_path, obs_id = _simulated_l0(tmp_path, without="EVENTS")
    key = f"{obs_id}/{l0_path.name}"
    # stored directly (no arrival event): the run is started explicitly below
    LocalObjectStore(frontend_stack.data_dir / "objects").put("raw", key, l0_path.read_bytes())
    started = httpx.post(
        f"{frontend_stack.url}/mxt/runs",
        json={"raw_key": f"raw/{key}", "programme": "ToO"},
        auth=frontend_stack.auth,
        timeout=HTTP_TIMEOUT,
    )
    if started.status_code != 201:
        # refused up front: the reason is in the answer, nothing for the dashboard to show
        assert started.status_code in (400, 422), started.text
        pytest.fail(f"the orchestrator refused the run before starting it: {started.text}")
    run_id = started.json()["run_id"]
    page.goto(f"/ui/#/runs/{run_id}")
    page.wait_for_function(
        "() => document.querySelector('#run-state .badge')?.dataset.state === 'failed'",
        timeout=RUN_TIMEOUT_MS,
    )
    run = httpx.get(f"{frontend_stack.url}/mxt/runs/{run_id}", timeout=HTTP_TIMEOUT).json()
    assert run["reason"]
    banner = page.locator("#run-reason [role=alert]")
    assert "Failed" in banner.inner_text()
    assert run["reason"][:60] in banner.inner_text()
    failed_task = next(t for t in run["tasks"] if t["state"] == "failed")
    node = page.locator(f'svg.dag g.node[data-brick="{failed_task["brick"]}"]')
    assert "state-failed" in node.get_attribute("class")

    # re-run from the page (behind the login): a new run of the same file, which fails alike
    assert page.locator("#rerun-button").is_disabled()
    _log_in(page, frontend_stack.password)
    page.locator("#rerun-button").click()
    page.wait_for_function(f"() => !location.hash.endsWith('{run_id}')")
    page.locator(f'dd a[href="#/runs/{run_id}"]').wait_for()  # "Re-run of" the failed run
    page.wait_for_function(
        "() => document.querySelector('#run-state .badge')?.dataset.state === 'failed'",
        timeout=RUN_TIMEOUT_MS,
    )

    page.goto("/ui/#/runs?state=failed")
    row = page.locator(f'#runs-body tr[data-run="{run_id}"]')
    row.wait_for()
    assert run["reason"][:60] in row.locator("td.reason").inner_text()
    # the runs page for the README: the completed run of the first test and this one
    page.goto("/ui/#/runs")
    page.locator(f'#runs-body tr[data-run="{run_id}"]').wait_for()
    _assert_runs_table_beside_the_panel(page)
    page.screenshot(path=str(screenshots / "runs.png"))
    page.set_viewport_size({"width": 1024, "height": 768})
    _assert_runs_table_beside_the_panel(page)


def _assert_runs_table_beside_the_panel(page: Any) -> None:
    """The runs table shows nothing under the submit panel (it may scroll in its column)."""
    boxes = page.evaluate(
        """() => {
            const box = (el) => { const r = el.getBoundingClientRect();
                return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
            const table = document.querySelector('table.runs');
            const clip = getComputedStyle(table.parentElement).overflowX;
            // what of the table can paint: itself, or its parent's box when that clips it
            const shown = ['auto', 'scroll', 'hidden', 'clip'].includes(clip)
                ? table.parentElement : table;
            return {table: box(shown), panel: box(document.querySelector('form.submit'))};
        }"""
    )
    table, panel = boxes["table"], boxes["panel"]
    apart = (
        table["right"] <= panel["left"]
        or panel["right"] <= table["left"]
        or table["bottom"] <= panel["top"]
        or panel["bottom"] <= table["top"]
    )
    assert apart, f"the runs table paints under the submit panel: {boxes}"


def _insert_runs(stack: Any, count: int) -> None:
    """``count`` finished runs straight into the stack's missiondb, as history would be."""
    from storage.db.engine import make_engine, transaction
    from storage.missiondb import RunSpec, create_run

    engine = make_engine(f"sqlite:///{stack.data_dir / 'mxt.db'}")
    prefix = uuid.uuid4().hex[:6]
    with transaction(engine) as db:
        for i in range(count):
            spec = RunSpec(run_id=f"r-hist-{prefix}-{i:04d}", programme=("ToO", "CP", "GP")[i % 3])
            create_run(db, spec)
    engine.dispose()


def test_first_load_with_1000_runs_is_one_page(page, frontend_stack):
    _insert_runs(frontend_stack, 1000)
    total = httpx.get(f"{frontend_stack.url}/mxt/runs?limit=1000", timeout=HTTP_TIMEOUT).json()
    assert len(total["items"]) == 1000
    page.goto("/ui/#/runs")
    page.wait_for_function("() => performance.getEntriesByName('mxt-runs-loaded').length > 0")
    timing = page.evaluate(
        """() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const loaded = performance.getEntriesByName('mxt-runs-loaded')[0];
            return {domContentLoaded: nav.domContentLoadedEventEnd, runsShown: loaded.startTime};
        }"""
    )
    print(
        "\ndashboard first load with >= 1000 runs in missiondb:"
        f" DOMContentLoaded {timing['domContentLoaded']:.0f} ms,"
        f" first page of runs shown {timing['runsShown']:.0f} ms after navigation start"
    )
    assert page.locator("#runs-body tr").count() == 50
    page.get_by_role("button", name="Load more").click()
    page.wait_for_function("() => document.querySelectorAll('#runs-body tr').length === 100")


def test_unknown_paths_are_json_404(page, frontend_stack):
    for path in ("/ui/no-such-file.js", "/no/such/service", "/mxt/runs/r-does-not-exist"):
        response = page.request.get(frontend_stack.url + path)
        assert response.status == 404, path
        assert response.headers["content-type"].startswith("application/json"), path
        assert json.loads(response.text())
    page.goto("/ui/#/runs/r-does-not-exist")
    page.locator("[role=alert]", has_text="No run r-does-not-exist").wait_for()


def _seed_programmes(stack: Any) -> None:
    """What the orchestrator does before its first run: programme configurations in configdb."""
    from gateway.orchestrator.service import seed_programmes
    from storage.db.engine import make_engine, transaction

    engine = make_engine(f"sqlite:///{stack.data_dir / 'mxt.db'}")
    with transaction(engine) as db:
        seed_programmes(db)
    engine.dispose()


def test_cancel_from_the_run_page(page, frontend_stack):
    _seed_programmes(frontend_stack)
    # a run recorded but never dispatched stays pending: the page cancels it live
    run_id = f"r-cancel-{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{frontend_stack.url}/mxt_missiondb/runs",
        json={"run_id": run_id, "programme": "ToO", "bricks": ["ingest", "calibrate"]},
        auth=frontend_stack.auth,
        timeout=HTTP_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    page.goto(f"/ui/#/runs/{run_id}")
    page.locator("#run-state [data-state=pending]").wait_for()
    assert page.locator("#cancel-button").is_disabled()  # behind the login
    _log_in(page, frontend_stack.password)
    page.locator("#cancel-button").click()
    page.locator("#run-state [data-state=cancelled]").wait_for()
    assert "cancelled by the operator" in page.locator("#run-reason").inner_text()
    assert page.locator("svg.dag g.node.state-cancelled").count() == 2
    assert page.locator("#rerun-button").is_visible()


def test_browsing_caldb_and_programmes(page, frontend_stack):
    _seed_programmes(frontend_stack)
    page.goto("/ui/#/caldb")
    page.locator("main table tbody tr").first.wait_for()
    assert page.locator("main table tbody tr").count() > 3  # the model CALDB
    link = page.locator("main table tbody tr a").first
    download = httpx.get(
        page.url.split("/ui/")[0] + link.get_attribute("href"), timeout=HTTP_TIMEOUT
    )
    assert download.status_code == 200 and download.content[:6] == b"SIMPLE"
    page.goto("/ui/#/observations")
    page.locator("main table").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.locator("main [role=alert]").count() == 0  # the listing loaded, even if empty
    page.goto("/ui/#/configs")
    page.get_by_role("heading", name="ToO").wait_for()
    page.keyboard.press("Tab")  # keyboard users reach the skip link first
    assert page.evaluate("document.activeElement.className") == "skip"


def test_function_deployed_later_appears_without_reload(page, frontend_stack):
    page.goto("/ui/#/functions")
    page.evaluate("window.__sameDocument = true")
    _log_in(page, frontend_stack.password)
    page.locator('#functions-body tr[data-function="echo"]').wait_for()
    handler = str(REPO / "tests/functions/echo")
    deployment = {
        "service": "ui-late-echo",
        "image": "x",
        "handler": handler,
        "annotations": {"com.mxt.access": "public"},
    }
    url = f"{frontend_stack.url}/system/functions"
    response = httpx.post(url, json=deployment, auth=frontend_stack.auth, timeout=HTTP_TIMEOUT)
    assert response.status_code == 202, response.text
    try:
        row = page.locator('#functions-body tr[data-function="ui-late-echo"]')
        row.wait_for(timeout=RUN_TIMEOUT_MS)
        row.locator("text=ready").wait_for(timeout=RUN_TIMEOUT_MS)
        assert page.evaluate("window.__sameDocument === true")
    finally:
        httpx.request(
            "DELETE",
            url,
            json={"functionName": "ui-late-echo"},
            auth=frontend_stack.auth,
            timeout=HTTP_TIMEOUT,
        )


# In-page checks (axe is not available offline). A control's accessible name follows the
# usual order: aria-labelledby, aria-label, its <label>s, then a button's own text.
# Contrast: WCAG 2 relative luminance of the text colour against the background actually
# behind it (translucent layers composited up to the first opaque one); disabled
# controls are exempt, as in WCAG.
A11Y_SCRIPT = "\n".join(  # the file's leading comments would hide the function from evaluate
    line
    for line in (Path(__file__).parent / "a11y_check.js").read_text().splitlines()
    if not line.startswith("//")
)
FOCUSED_SCRIPT = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const rect = el.querySelector && el.querySelector("rect");
  return {
    tag: el.tagName, id: el.id, name: el.getAttribute("name"), cls: el.getAttribute("class") || "",
    brick: el.dataset ? el.dataset.brick || null : null,
    label: el.getAttribute("aria-label"), text: el.textContent.trim().slice(0, 40),
    outline: style.outlineStyle + " " + style.outlineWidth,
    stroke: rect ? getComputedStyle(rect).stroke : null,
  };
}"""


def _assert_accessible(page: Any, where: str) -> None:
    found = page.evaluate(A11Y_SCRIPT)
    assert found["unnamed"] == [], f"{where}: controls without an accessible name"
    assert found["lowContrast"] == [], f"{where}: text below 4.5:1 contrast"


def _tab_through(page: Any, presses: int) -> list[dict[str, Any]]:
    """Press Tab ``presses`` times; what had the focus after each press, and its focus ring."""
    reached = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(FOCUSED_SCRIPT))
    return reached


def test_runs_page_controls_named_focus_visible_and_in_tab_order(page, frontend_stack):
    page.goto("/ui/#/runs")
    page.locator("#feed-status[data-state=on]").wait_for()
    _assert_accessible(page, "runs page, logged out")
    page.get_by_role("button", name="Log in").click()
    _assert_accessible(page, "login dialog")
    page.get_by_label("Password").fill(frontend_stack.password)
    page.locator("#login-submit").click()
    page.get_by_role("button", name="Log out").wait_for()
    _assert_accessible(page, "runs page, logged in")

    page.reload()  # Tab from the top of the page, logged in (the session keeps the login)
    page.locator("#runs-body tr").first.wait_for()
    reached = _tab_through(page, 25)
    ids = {r["id"] for r in reached} | {r["name"] for r in reached}
    for control in ("programme", "state", "obs_id", "submit-file", "submit-button", "login-button"):
        assert control in ids, f"{control} is not reached by Tab: {reached}"
    assert any(r["text"] == "Runs" for r in reached), "the navigation is not reached by Tab"
    for r in (r for r in reached if r["tag"] != "BODY"):  # BODY: Tab went round the page
        # every keyboard stop shows a ring (a 2 px outline at least), none hides it
        assert r["outline"].startswith("solid") and float(r["outline"].split()[1][:-2]) >= 2, r


def test_dag_nodes_reached_by_keyboard_with_state_in_text(page, frontend_stack):
    _seed_programmes(frontend_stack)
    run_id = f"r-a11y-{uuid.uuid4().hex[:8]}"
    bricks = ["ingest", "calibrate", "coordinates"]
    created = httpx.post(
        f"{frontend_stack.url}/mxt_missiondb/runs",
        json={"run_id": run_id, "programme": "ToO", "bricks": bricks},
        auth=frontend_stack.auth,
        timeout=HTTP_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    page.goto(f"/ui/#/runs/{run_id}")
    page.locator("svg.dag g.node").first.wait_for()
    _assert_accessible(page, "run page")
    page.locator("p.crumbs a").focus()
    reached = [r for r in _tab_through(page, 20) if r["brick"]]
    # in graph order (Tab may go round the page and meet them again)
    assert list(dict.fromkeys(r["brick"] for r in reached)) == bricks, reached
    for node in reached:
        # the state in words, for screen readers and on the node itself, not only colour
        assert node["label"] == f"{node['brick']}: pending", node
        assert "pending" in node["text"], node
        assert node["stroke"] == "rgb(179, 89, 0)", node  # the focus ring colour (--focus)


# ---------------------------------------------------------------- logins, roles, CSP


def _add_user(stack: Any, name: str, role: str) -> str:
    """A new user of the stack with ``role``; its password, once the gateway knows it."""
    password = f"{name}-{uuid.uuid4().hex[:12]}"
    headers = stack.add_user(name, role, password)
    deadline = time.monotonic() + 30  # the gateway looks at the users file once a second
    while True:
        answer = httpx.get(f"{stack.url}/system/whoami", headers=headers, timeout=HTTP_TIMEOUT)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"] == name and answer.json()["role"] == role
    return password


def _pending_run(stack: Any, prefix: str) -> str:
    """A run recorded but never dispatched: it stays pending (admin writes it)."""
    _seed_programmes(stack)
    run_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{stack.url}/mxt_missiondb/runs",
        json={"run_id": run_id, "programme": "ToO", "bricks": ["ingest", "calibrate"]},
        auth=stack.auth,
        timeout=HTTP_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    return run_id


def _header_only_l0(tmp_path: Path) -> tuple[Path, str]:
    """A file whose first block is a FITS primary header with an OBS_ID (nothing else)."""
    obs_id = f"ui{uuid.uuid4().hex[:8]}"
    cards = ["SIMPLE  =                    T", f"OBS_ID  = '{obs_id}'", "END"]
    path = tmp_path / f"{obs_id}_mxt_l0.fits"
    path.write_bytes("".join(card.ljust(80) for card in cards).ljust(2880).encode())
    return path, obs_id


SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
CSP_REQUIRED = (
    "default-src 'self'",
    "script-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


def _assert_security_headers(headers: dict[str, str], what: str) -> None:
    """The dashboard's CSP (nothing unsafe, websocket of this host only) and frame headers."""
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"
    policy = [d.strip() for d in headers.get("content-security-policy", "").split(";")]
    for directive in CSP_REQUIRED:
        assert directive in policy, f"{what}: {directive!r} not in {policy}"
    assert not any("unsafe" in d or "*" in d for d in policy), f"{what}: {policy}"
    connect = next(d for d in policy if d.startswith("connect-src ")).split()[1:]
    host = urlsplit(what).netloc
    assert set(connect) <= {"'self'", f"ws://{host}", f"wss://{host}"}, connect


def test_pages_load_under_the_csp_with_the_live_feed(page, frontend_stack, csp_violations):
    run_id = _pending_run(frontend_stack, "r-csp")
    responses: list[Any] = []
    fetches: list[Any] = []
    page.on("response", lambda r: responses.append(r) if "/ui/" in r.url else None)
    page.on("request", lambda r: fetches.append(r) if r.resource_type == "fetch" else None)
    page.goto("/ui/#/runs")
    page.locator("#feed-status[data-state=on]").wait_for()  # the websocket connected
    page.locator(f'#runs-body tr[data-run="{run_id}"] a').click()
    page.wait_for_function("() => performance.getEntriesByName('mxt-run-loaded').length > 0")
    page.locator("#feed-status[data-state=on]").wait_for()  # the run page's own feed
    # the DAG's width limit goes through the CSSOM (a style attribute would be refused)
    assert page.evaluate("document.querySelector('svg.dag').style.maxWidth").endswith("px")
    assert csp_violations == []

    # every response of the dashboard carries the headers: the page, scripts, style, icon
    loaded = {r.url.rsplit("/", 1)[-1] or "index.html": r for r in responses}
    for name in ("index.html", "app.js", "api.js", "runs.js", "run.js", "style.css", "icon.svg"):
        assert name in loaded, f"{name} not loaded: {sorted(loaded)}"
        assert loaded[name].status == 200, name
        _assert_security_headers(loaded[name].all_headers(), loaded[name].url)
    missing = page.request.get(frontend_stack.url + "/ui/no-such-file.js")
    _assert_security_headers(missing.headers, missing.url)
    # every call of the page to the gateway says it is the dashboard's
    assert len(fetches) >= 4
    for request in fetches:
        assert request.all_headers().get("x-requested-with") == "mxt-dashboard", request.url

    # the policy is enforced, and a violation would be seen: an inline script is refused
    with page.expect_console_message(lambda m: CSP_MARK in m.text):
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.__inline = true'; document.body.append(s); }"
        )
    assert page.evaluate("window.__inline === undefined")
    csp_violations.clear()  # that one was the test's own


def test_wrong_password_is_said_in_the_dialog_without_a_browser_prompt(page, frontend_stack):
    page.goto("/ui/#/runs")
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Password").fill("not-" + frontend_stack.password)
    with page.expect_response(lambda r: r.url.endswith("/system/whoami")) as answer:
        page.locator("#login-submit").click()
    response = answer.value
    assert response.status == 401
    assert response.request.all_headers().get("x-requested-with") == "mxt-dashboard"
    # no challenge: the browser has no reason to show its own password prompt
    assert "www-authenticate" not in response.all_headers(), response.all_headers()
    page.locator("#login-error", has_text="wrong user or password").wait_for()
    assert page.locator("#login-dialog").is_visible()
    assert page.locator("#whoami").is_hidden()
    # the same call without X-Requested-With is challenged: the header makes the difference
    plain = httpx.get(
        f"{frontend_stack.url}/system/whoami", auth=("admin", "wrong"), timeout=HTTP_TIMEOUT
    )
    assert plain.status_code == 401 and plain.headers["www-authenticate"].startswith("Basic")

    page.get_by_label("Password").fill(frontend_stack.password)
    page.locator("#login-submit").click()
    page.locator("#whoami", has_text="admin (admin)").wait_for()
    assert page.locator("#login-dialog").is_hidden()


def test_scientist_reads_but_cannot_submit_or_cancel(page, frontend_stack, tmp_path):
    run_id = _pending_run(frontend_stack, "r-sci")
    password = _add_user(frontend_stack, "ada", "scientist")
    page.goto("/ui/#/runs")
    _log_in(page, password, user="ada")
    page.locator("#whoami", has_text="ada (scientist)").wait_for()
    page.locator(f'#runs-body tr[data-run="{run_id}"]').wait_for()  # reads work logged in

    submit = page.locator("#submit-button")
    assert submit.is_disabled()
    hint = page.locator("#submit-login-hint").inner_text()
    assert "scientist" in hint and "operator" in hint, hint
    # forced (the control enabled by hand): the gateway refuses, the page says why
    l0_path, obs_id = _header_only_l0(tmp_path)
    page.get_by_label("L0 file").set_input_files(str(l0_path))
    page.locator("#submit-info", has_text=obs_id).wait_for()
    submit.evaluate("button => { button.disabled = false; }")
    with page.expect_response(lambda r: "/function/objects-upload" in r.url) as answer:
        submit.click()
    assert answer.value.status == 403
    refused = page.locator("#submit-status [role=alert]")
    refused.wait_for()
    text = refused.inner_text()
    assert "Not allowed" in text and "operator" in text and "ada (scientist)" in text, text

    page.goto(f"/ui/#/runs/{run_id}")
    cancel = page.locator("#cancel-button")
    page.locator("#run-state [data-state=pending]").wait_for()
    assert cancel.is_disabled()
    assert "cannot cancel" in page.locator("#actions-hint").inner_text()
    cancel.evaluate("button => { button.disabled = false; }")
    with page.expect_response(lambda r: r.url.endswith(f"/{run_id}/cancel")) as answer:
        cancel.click()
    assert answer.value.status == 403
    page.locator("[role=alert]", has_text="cancel refused: Not allowed").wait_for()
    run = httpx.get(f"{frontend_stack.url}/mxt/runs/{run_id}", timeout=HTTP_TIMEOUT).json()
    assert run["state"] == "pending"


def test_operator_submits(page, frontend_stack, tmp_path):
    password = _add_user(frontend_stack, "otto", "operator")
    # no EVENTS table: its run fails at the first step, which keeps the test short
    l0_path, obs_id = _simulated_l0(tmp_path, without="EVENTS")
    page.goto("/ui/#/runs")
    _log_in(page, password, user="otto")
    page.locator("#whoami", has_text="otto (operator)").wait_for()
    assert page.locator("#submit-login-hint").inner_text() == ""
    page.get_by_label("L0 file").set_input_files(str(l0_path))
    page.locator("#submit-info", has_text=obs_id).wait_for()
    with page.expect_response(lambda r: "/function/objects-upload" in r.url) as answer:
        page.get_by_role("button", name="Submit observation").click()
    assert answer.value.status == 201
    page.locator("#submit-status", has_text=f"Stored raw/{obs_id}/").wait_for()
    page.locator(f'#runs-body tr[data-obs="{obs_id}"]').wait_for(timeout=RUN_TIMEOUT_MS)
