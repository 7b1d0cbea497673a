"""A page laid out by headless Chromium, measured: what a reader's browser makes of
``report.html`` at a given window width.

A copy of the page gets a script that, once every image has loaded, measures the layout and
writes the numbers into the DOM; ``chromium --dump-dom`` prints the DOM. Plain Chromium
(Debian's ``chromium`` package, which ``.ci/run`` installs where it can): no browser driver,
no Python dependency.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import pytest

#: the measuring script: the viewport, the page's scroll width, every element whose box leaves
#: the viewport (unless a scrolling box inside the viewport holds it), each table's box (the
#: heading above it, whether it scrolls) and every image
MEASURE = """
<script>
addEventListener("load", () => {
  const width = innerWidth;
  const inside = (r) => r.left >= -0.5 && r.right <= width + 0.5;
  const held = (el) => {  // a scrolling ancestor that fits the viewport holds el
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== "visible") return inside(a.getBoundingClientRect());
    }
    return false;
  };
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if ((r.width || r.height) && !inside(r) && !held(el)) {
      wide.push(`${el.tagName.toLowerCase()} '${el.textContent.slice(0, 40)}' right ${r.right}`);
    }
  }
  const tables = [...document.querySelectorAll("table")].map((t) => {
    const box = t.parentElement;
    return {title: box.previousElementSibling.textContent,
            scrolls: box.scrollWidth > box.clientWidth,
            overflow: getComputedStyle(box).overflowX};
  });
  const images = [...document.images].map((i) => ({complete: i.complete,
    natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({width, scroll: document.documentElement.scrollWidth,
                                    wide, tables, images});
  document.body.append(out);
});
</script>
"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium() -> str:
    """The Chromium binary; the test skips where there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it "
                "where apt-get works): the page's layout in a browser is not checked")


def measure(page: Path, width: int, work: Path) -> dict:
    """Lay ``page`` out in a ``width``-pixel window; returns the viewport width, the page's
    scroll width, the elements wider than the viewport (``wide``), each table's box and every
    image (complete, natural and shown width)."""
    copy = work / f"measured-{width}.html"
    copy.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={work / 'profile'}",
                           f"--window-size={width},1000", "--virtual-time-budget=10000",
                           "--dump-dom", copy.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.index('<pre id="measured">') + len('<pre id="measured">')
    text = done.stdout[start:done.stdout.index("</pre>", start)]
    return json.loads(html.unescape(text))
