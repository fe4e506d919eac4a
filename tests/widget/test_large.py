"""A ~200-task flow in the widget, in a real browser: readable first view, minimap,
search, collapsing groups and chains; and the note of a view no kernel answers.

JupyterLab + Debian's Chromium + Playwright, with the server and browser fixtures of
test_browser.py. The notebook is written by the test (below); its second cell shows a
small widget and then blocks until the test lets it go, so the views' pings go
unanswered meanwhile. Screenshots go to build/test-artifacts/screens/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .test_browser import ARTIFACTS, KERNEL_READY, browser, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SCREENS = ARTIFACTS / "screens"
LARGE = ".nbf-root[data-flow='large']"

FLOW = """\
import os
import random
import time

import nbflow as nf

flow = nf.Flow("large")
rnd = random.Random(7)


def step():
    return 1


def add(name, after=(), group=None):
    options = {"after": list(after), "cache": False}
    if group:
        options["group"] = group
    flow.add(nf.Task.from_function(step, name=name, options=options))


add("load")
for r in range(8):  # 8 groups of 12 tasks: three strands of 4
    for i in range(12):
        add(f"region{r}_{i}", [f"region{r}_{i - 3}"] if i >= 3 else ["load"], f"region{r}")
for c in range(4):  # 4 chains of 10 tasks
    for i in range(10):
        add(f"chain{c}_{i}", [f"chain{c}_{i - 1}"] if i else ["load"])
ends = [f"region{r}_{i}" for r in range(8) for i in range(9, 12)] + [f"chain{c}_9" for c in range(4)]
for j in range(60):
    add(f"feature{j}", rnd.sample(ends, 2))
add("report", [f"feature{j}" for j in range(60)])
print(len(flow.tasks), "tasks")
run = flow.run()
widget = run.widget(flow)
widget
"""

BLOCK = """\
small = nf.Flow("small")
small.task(name="only")(lambda: 1)
shown = small.widget()
shown.wait_layout(60)  # nothing more to send: the view hears from the kernel only by its ping
display(shown)
while not os.path.exists({gate!r}):  # the test lets the cell end
    time.sleep(0.05)
"""

#: per node name: its centre's offset from the stage's centre, in px
OFF_CENTRE = """([root, name]) => {
  const r = document.querySelector(root);
  const g = r.querySelector(`g.node[data-name='${name}']`);
  const s = r.querySelector('.nbf-stage').getBoundingClientRect();
  const b = g.getBoundingClientRect();
  return [b.left + b.width / 2 - (s.left + s.width / 2), b.top + b.height / 2 - (s.top + s.height / 2)];
}"""

#: the on-screen size of task names (px), the scale, the readable scale
SIZES = """(root) => {
  const r = document.querySelector(root);
  const svg = r.querySelector('svg.nbf-svg');
  const text = svg.querySelector('g.node text');
  const unit = svg.width.baseVal.value / svg.viewBox.baseVal.width;
  const scale = Number(r.dataset.scale);
  return {px: Number(text.getAttribute('font-size')) * unit * scale, scale,
          readable: Number(r.dataset.readable),
          whole: Math.min(r.querySelector('.nbf-stage').getBoundingClientRect().width
                          / svg.width.baseVal.value, 1.5)};
}"""


def write_notebook(root: Path, gate: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.cells = [nbformat.v4.new_code_cell(FLOW),
                nbformat.v4.new_code_cell(BLOCK.format(gate=str(gate)))]
    nbformat.write(nb, root / "large.ipynb")


def shot(page: Any, name: str, target: Any = None) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    (target or page).screenshot(path=str(SCREENS / f"{name}.png"))


def centred(page: Any, name: str) -> None:
    """Wait until node ``name`` is drawn in the middle of the large widget's stage."""
    page.wait_for_function(f"""() => {{ const [dx, dy] = ({OFF_CENTRE})(["{LARGE}", "{name}"]);
        return Math.abs(dx) < 2 && Math.abs(dy) < 2; }}""", timeout=10_000)


@pytest.mark.parametrize("server", ["lab"], indirect=True)
def test_a_large_graph_stays_readable(server: str, browser, tmp_path: Path) -> None:  # noqa: F811
    gate = tmp_path / "gate"
    write_notebook(tmp_path / "root", gate)
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.replace("dag.ipynb", "large.ipynb"))
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    # While the second cell runs, the kernel answers no message from the front end: both
    # views say so after a few seconds, and take it back once the cell ends.
    small = page.locator(".nbf-root[data-flow='small']")
    small.locator(".nbf-offline").wait_for(state="visible", timeout=120_000)
    note = small.locator(".nbf-offline").inner_text()
    assert re.fullmatch(r"no answer from the kernel \(showing the saved state of \d\d:\d\d\)",
                        note), note
    gate.write_text("go")
    page.wait_for_function("""() => [...document.querySelectorAll('.nbf-root')]
        .every((r) => r.dataset.live === 'yes')""", timeout=60_000)
    assert page.locator(".nbf-offline:visible").count() == 0

    # -- the first view: fitted down to a readable scale, the minimap shows the rest ------------
    root = page.locator(LARGE)
    root.locator("g.node[data-name='report'][data-state='succeeded']").wait_for(timeout=60_000)
    assert root.get_attribute("data-nodes") == "198"
    sizes = page.evaluate(SIZES, LARGE)
    assert sizes["whole"] < sizes["readable"]  # the whole graph would be unreadable...
    assert sizes["scale"] == pytest.approx(sizes["readable"], abs=1e-3)  # ...so: readable
    assert sizes["px"] >= 9.99, sizes
    assert root.get_attribute("data-minimap") == "shown"
    assert root.locator(".nbf-minimap").is_visible()
    stage = root.locator(".nbf-stage").bounding_box()
    assert stage is not None and stage["height"] > 420  # a taller stage for a tall graph
    root.scroll_into_view_if_needed()
    shot(page, "large-first-view", root)

    # the minimap moves the view
    before = root.locator(".nbf-canvas").get_attribute("style")
    mini = root.locator(".nbf-minimap").bounding_box()
    assert mini is not None
    page.mouse.click(mini["x"] + 10, mini["y"] + mini["height"] / 2)  # its left end
    assert root.locator(".nbf-canvas").get_attribute("style") != before

    # -- search: typed (no notebook shortcut takes the keys), matches highlighted --------------
    search = root.locator("input.nbf-search")
    cells = page.locator(".jp-Cell").count()
    search.click()
    search.press_sequentially("chain2_")
    assert search.input_value() == "chain2_" and page.locator(".jp-Cell").count() == cells
    page.wait_for_function(f"document.querySelector(\"{LARGE}\").dataset.matches === '10'")
    assert root.locator("g.node.nbf-match").count() == 10
    assert root.get_attribute("data-match") == "chain2_0"  # the first in reading order...
    centred(page, "chain2_0")  # ...in the middle of the view
    assert root.locator(".nbf-search-count").inner_text() == "1/10"
    search.press("Enter")
    page.wait_for_function(f"document.querySelector(\"{LARGE}\").dataset.match === 'chain2_1'")
    centred(page, "chain2_1")
    assert root.locator(".nbf-search-count").inner_text() == "2/10"
    shot(page, "large-search", root)
    prompts = page.locator(".jp-InputPrompt").all_inner_texts()
    search.press("Shift+Enter")  # back to the previous match; no cell runs
    page.wait_for_function(f"document.querySelector(\"{LARGE}\").dataset.match === 'chain2_0'")
    assert page.locator(".jp-InputPrompt").all_inner_texts() == prompts

    # -- collapse a group from a member's panel ------------------------------------------------
    search.fill("region3_0")
    centred(page, "region3_0")
    root.locator("g.node[data-name='region3_0']").click()
    root.locator(".nbf-act-collapse", has_text="collapse group region3").click()
    group = root.locator("g.node[data-name='group/region3']")
    group.wait_for(timeout=60_000)
    assert group.get_attribute("data-state") == "succeeded"
    assert group.locator(".nbf-state-text").text_content() == "succeeded 12/12"
    assert root.locator("g.node[data-name^='region3_']").count() == 0
    assert root.get_attribute("data-nodes") == str(198 - 12 + 1)
    centred(page, "group/region3")  # the collapsed node is centred and selected
    panel = root.locator(".nbf-panel")
    assert "group region3" in panel.inner_text() and "12/12" in panel.inner_text()
    assert panel.locator(".nbf-members tr").count() == 12
    search.fill("")
    shot(page, "large-collapsed-group", root)

    # ... and a group from its box's label
    search.fill("region5_0")
    centred(page, "region5_0")
    root.locator("g.cluster[data-unit='group/region5'] text.nbf-cluster-label").click()
    root.locator("g.node[data-name='group/region5']").wait_for(timeout=60_000)

    # -- collapse a chain, then expand it from its panel ---------------------------------------
    search.fill("chain1_4")
    centred(page, "chain1_4")
    root.locator("g.node[data-name='chain1_4']").click()
    root.locator(".nbf-act-collapse", has_text="collapse chain (10 tasks)").click()
    chain = root.locator("g.node[data-name='chain/chain1_0']")
    chain.wait_for(timeout=60_000)
    assert chain.locator(".nbf-state-text").text_content() == "succeeded 10/10"
    assert "chain1_0 … chain1_9" in (chain.locator(".nbf-name").text_content() or "")
    centred(page, "chain/chain1_0")
    search.fill("")
    shot(page, "large-collapsed-chain", root)
    panel.locator(".nbf-act-expand").click()
    root.locator("g.node[data-name='chain1_0']").wait_for(timeout=60_000)
    assert root.locator("g.node[data-name='chain/chain1_0']").count() == 0

    # -- the toolbar: every chain, then everything back -----------------------------------------
    root.locator("button.nbf-collapse-chains").click()
    page.wait_for_function(f"""() => document.querySelector("{LARGE}")
        .querySelectorAll("g.node[data-fold='chain']").length === 4""", timeout=60_000)
    root.locator("button.nbf-expand-all").click()
    page.wait_for_function(f"document.querySelector(\"{LARGE}\").dataset.nodes === '198'",
                           timeout=60_000)
    assert root.locator("button.nbf-expand-all").is_hidden()
    assert "198 succeeded" in root.locator(".nbf-status").inner_text()
    assert not [e for e in errors if "nbf" in e or "widget" in e], errors
