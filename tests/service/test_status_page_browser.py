"""The status page in headless Chromium (Debian's, driven by Playwright over CDP).

A real Service with its HTTP trigger on 127.0.0.1 (with a token): the page lists the
jobs, follows a running job until it ends without a reload, draws each job's DAG with
the widget's own view (its SVG nodes, states and details panel), cancels a job, and
asks for the token when it has none. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from .http_client import finished, serve_http_fixture  # noqa: F401 (the fixture serve_http)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[2] / "build" / "test-artifacts"
TOKEN = "status-page-token"
#: milliseconds the page gets to show a change (it polls every second while jobs run)
SHOWN = 15_000

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium as root)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api")


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    """Debian's headless Chromium, started (and stopped) by pid (tests/widget/jupyter.py)."""
    from widget.jupyter import chromium

    with chromium(tmp_path) as started:
        yield started


def new_page(browser: Any, errors: list[str]) -> Any:
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # (the page's policy allows its own scripts only: anything it blocks is a bug)
    page.on("console", lambda msg: errors.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    return page


def node_states(page: Any) -> dict[str, str]:
    """``{task: state}`` of the DAG's nodes, as the widget's view marks them."""
    return dict(page.evaluate("""() => [...document.querySelectorAll('#dag svg g.node')]
        .map((g) => [g.dataset.name, g.dataset.state])"""))


def open_gate(gate: Path) -> None:
    with open(gate, "w") as f:  # a FIFO: the waiting task reads it and goes on
        f.write("go")


@pytest.fixture
def gate(tmp_path: Path) -> Any:
    """A FIFO that tasks wait on; any task still waiting is let go after the test (before
    the service stops: a fixture set up after ``serve_http`` is torn down before it)."""
    path = tmp_path / "gate"
    os.mkfifo(path)
    yield path
    for _ in range(5):
        try:  # (without blocking: ENXIO when no task waits)
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            break
        os.write(fd, b"go")
        os.close(fd)


def test_the_status_page_follows_jobs_and_draws_their_dag(serve_http, browser, gate, tmp_path):
    client, service = serve_http("two_steps", token=TOKEN, concurrency=1)
    calls = str(tmp_path / "calls")
    waiting = client.post({"n": 1, "calls": calls, "gate": str(gate)})[2]["id"]
    wait_until(lambda: service.job(waiting).tasks.get("second", {}).get("state") == "running",
               what="the job waits at its gate")

    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto(f"{client.server.url}/#token={TOKEN}")
    # the token left the address bar (kept for the tab); the running job is selected
    page.wait_for_selector(f"#jobs tr[data-id='{waiting}'][data-state='running']", timeout=SHOWN)
    assert "token" not in page.url
    page.wait_for_function("""() => { const g = (n) => document.querySelector(
          `#dag svg g.node[data-name='${n}']`);
        return g('first')?.dataset.state === 'succeeded' && g('second')?.dataset.state === 'running'; }""",
                           timeout=SHOWN)
    assert page.locator("#dag.nbf-root").count() == 1  # the widget's view itself
    assert page.get_attribute("body", "data-busy") == "yes"
    assert page.inner_text("#title") == "nbflow serve: two-steps"
    assert "1 running" in page.inner_text("#counts")
    # the widget's SVG: one node per task, the running one with its status line
    assert sorted(node_states(page)) == ["first", "second"]
    assert (page.locator("#dag g.node[data-name='second'] text.nbf-state-text").text_content()
            or "").startswith("running")
    assert page.locator("#dag .nbf-legend-item").count() >= 5
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "status-page-running.png"), full_page=True)

    # the job ends: the page shows it without a reload
    polls = int(page.get_attribute("body", "data-polls") or 0)
    open_gate(gate)
    page.wait_for_selector(f"#jobs tr[data-id='{waiting}'][data-state='succeeded']",
                           timeout=SHOWN)
    page.wait_for_function("""() => document.querySelector(
        "#dag svg g.node[data-name='second']")?.dataset.state === 'succeeded'""", timeout=SHOWN)
    assert int(page.get_attribute("body", "data-polls") or 0) > polls
    assert page.locator("#dag.nbf-root").get_attribute("data-run-status") == "succeeded"
    assert "20" in page.inner_text("#job-facts")  # its result (second: 10 * (1 + 1))

    # a failing job (its calls file is a folder) appears; selecting it draws its states
    failing = client.post({"n": 2, "calls": str(tmp_path), "gate": ""})[2]["id"]
    wait_until(lambda: finished(service, failing), what="the failing job ends")
    page.wait_for_selector(f"#jobs tr[data-id='{failing}'][data-state='failed']", timeout=SHOWN)
    page.click(f"#jobs tr[data-id='{failing}']")
    page.wait_for_function("""() => document.querySelector(
        "#dag svg g.node[data-name='first']")?.dataset.state === 'failed'""", timeout=SHOWN)
    assert node_states(page) == {"first": "failed", "second": "skipped"}
    assert page.url.endswith(f"#job={failing}")
    assert "IsADirectoryError" in page.inner_text("#job-error")
    # the widget's details panel, for the failed task
    page.click("#dag g.node[data-name='first']")
    page.wait_for_selector("#dag .nbf-panel .nbf-exception", timeout=SHOWN)
    assert "IsADirectoryError" in page.inner_text("#dag .nbf-panel .nbf-exception")
    page.screenshot(path=str(ARTIFACTS / "status-page-failed.png"), full_page=True)

    # the list filtered by state
    page.select_option("#state-filter", "failed")
    page.wait_for_function(f"""() => {{ const rows = [...document.querySelectorAll('#jobs tbody tr')];
        return rows.length === 1 && rows[0].dataset.id === '{failing}'; }}""", timeout=SHOWN)
    page.select_option("#state-filter", "")

    # cancel a running job from the page
    cancelled = client.post({"n": 3, "calls": calls, "gate": str(gate)})[2]["id"]
    page.click(f"#jobs tr[data-id='{cancelled}']", timeout=SHOWN)
    page.wait_for_selector("#job-cancel:not([hidden])", timeout=SHOWN)
    wait_until(lambda: service.job(cancelled).state == "running", what="the job runs")
    page.click("#job-cancel")
    wait_until(lambda: service.job(cancelled).cancel_requested or service.job(cancelled).done,
               what="the cancel reaches the service")
    open_gate(gate)  # (a task blocked in a read is not interrupted by a cancel)
    page.wait_for_selector(f"#jobs tr[data-id='{cancelled}'][data-state='cancelled']",
                           timeout=SHOWN)
    page.wait_for_selector("#job-cancel[hidden]", state="attached", timeout=SHOWN)
    page.wait_for_function("() => document.body.dataset.busy === 'no'", timeout=SHOWN)
    assert not errors, errors


def test_the_page_asks_for_the_token_and_shows_an_unknown_job(serve_http, browser):
    client, service = serve_http("served", token=TOKEN)
    job_id = client.post({"n": 2})[2]["id"]
    wait_until(lambda: finished(service, job_id), what="the job")
    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto(f"{client.server.url}/")
    page.wait_for_selector("#auth:not([hidden])", timeout=SHOWN)
    assert "Authorization: Bearer TOKEN" in page.inner_text("#problem")
    assert page.locator("#jobs tbody tr").count() == 0  # nothing is shown without it
    page.fill("#token", "wrong")
    page.click("#token-save")
    page.wait_for_function("() => Number(document.body.dataset.polls) >= 2", timeout=SHOWN)
    assert page.is_visible("#auth")
    page.fill("#token", TOKEN)
    page.click("#token-save")
    page.wait_for_selector(f"#jobs tr[data-id='{job_id}'][data-state='succeeded']",
                           timeout=SHOWN)
    assert page.is_hidden("#auth")
    page.wait_for_function("""() => document.querySelector(
        "#dag svg g.node[data-name='doubled']")?.dataset.state === 'succeeded'""", timeout=SHOWN)
    # an unknown job in the address: said in one line, the list still shown
    page.goto(f"{client.server.url}/#job=nope")
    page.reload()
    page.wait_for_selector("#problem:not([hidden])", timeout=SHOWN)
    assert page.inner_text("#problem") == ("job nope: no job 'nope' in this state dir "
                                           "(see nbflow jobs)")
    assert page.locator(f"#jobs tr[data-id='{job_id}']").count() == 1
    assert page.is_hidden("#job")
    assert not errors, errors
