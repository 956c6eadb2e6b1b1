"""The reproduction report's building blocks (the full `attngrad reproduce` run takes ~2 minutes; see README)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from attngrad.experiments.report import Section, find_image, overlay_row


def test_section_html_escapes_and_formats():
    sec = Section("A <b> & c", "caption <i>kept</i>", pictures=[("p.png", "x < y")])
    sec.tables.append((["name", "value"], [["zebra & co", 0.123456], ["n", 3]]))
    sec.notes.append("skipped <el9.jpg>")
    page = sec.html()
    assert "<h2>A &lt;b&gt; &amp; c</h2>" in page
    assert "caption <i>kept</i>" in page  # captions are trusted HTML
    assert "<img src='p.png' alt='x &lt; y'>" in page
    assert "<td>zebra &amp; co</td><td>0.123</td>" in page and "<td>3</td>" in page
    assert "skipped &lt;el9.jpg&gt;" in page


def test_find_image_and_overlay_row(tmp_path):
    path = find_image("el1.jpg")
    assert path is not None and path.is_file()
    assert find_image("no_such_case.jpg") is None
    image = Image.new("RGB", (32, 32), (200, 200, 200))
    out = overlay_row([(image, None, "image"), (image, np.eye(4) - 0.5, "map")], tmp_path / "row.png")
    assert Image.open(out).size[0] > 200
