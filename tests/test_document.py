"""bench.reporting.document: one document model, two renderers that show the same headings and tables, and all escaping
in the renderers (a hostile cell name stays text in both formats)."""
from __future__ import annotations

import inspect
import re

import pandas as pd
import pytest
from PIL import Image as PILImage

from bench import report
from bench.reporting import document as d
from helpers import md_tables, parse, same_in_both, text_of

HOSTILE = "<script>alert(1)</script>|x"


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "fig.png"
    PILImage.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


@pytest.fixture
def sample(tmp_path, png):
    """A document with every kind of block, a hostile name in every place that takes text."""
    frame = pd.DataFrame({"cell": ["mse", HOSTILE, "kl"], "PSNR (dB)": [23.5, float("nan"), 21.25],
                          "seeds": [2, 2, 1]})
    links = d.Table(["cell", "weights"], [[HOSTILE, d.Link(HOSTILE, "models/x%7Cy/model.safetensors")],
                                          ["mse", d.Link("model.safetensors", "models/mse/model.safetensors")]])
    blocks = [
        d.Heading(1, f"Report: {HOSTILE}"),
        d.Paragraph(f"*Generated* by `colorbench report` for **{HOSTILE}**.", "note"),
        d.List([f"Top-ranked cell: **{HOSTILE}**", "plain & simple"]),
        d.Contents(),
        d.Heading(2, "Leaderboard", "leaderboard"),
        d.Heading(3, f"Test set {HOSTILE}"),
        d.Table.from_frame(frame, sortable=True, style="board"),
        d.Heading(2, "Trained models", "models"),
        links,
        d.Heading(2, "Figures"),
        d.Image(png, "figures/fig.png", HOSTILE, f"caption of {HOSTILE}"),
        d.Heading(2, "Figures"),  # a repeated heading gets its own id
        d.Details(f"summary {HOSTILE}", [d.Heading(3, "Folded"), d.Table(["k"], [[HOSTILE]])]),
        d.Details("long listing", [d.Code(HOSTILE)], markdown=f"the listing of {HOSTILE} is in `run.json`"),
        d.Heading(2, "How to reproduce", "reproduce"),
        d.Code(f"colorbench ablate --grid '{HOSTILE}'\n```\nnot the end of the block", "bash"),
        d.Gallery([f"{HOSTILE} (seed 0)", "mse (seed 0)"],
                  [d.GalleryCard(HOSTILE, png, None, [(0, png, f"{HOSTILE}: 21.00"), (1, png, "mse")])]),
    ]
    return d.Document(f"title {HOSTILE}", blocks)


def test_every_heading_is_in_both_formats(sample):
    md, page = d.to_markdown(sample), parse(d.to_html(sample))
    heads = d.headings(sample.blocks)
    assert len(heads) == 8
    md_lines = md.splitlines()
    ids = d.anchors(sample)
    same_in_both(sample, md, d.to_html(sample))  # "#…" in the Markdown, <hN id=…> in the HTML, same order
    assert len(set(ids.values())) == len(ids)  # ids unique (the repeated "Figures")
    assert [ids[id(h)] for h in heads if h.anchor] == ["leaderboard", "models", "reproduce"]
    # the contents list the level-2 headings in both: links to the HTML ids, to GitHub's anchors in the Markdown
    level2 = [h for h in heads if h.level == 2]
    nav = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").startswith("#")]
    assert nav == ["#" + ids[id(h)] for h in level2]
    contents = next(line for line in md_lines if line.startswith("Contents: "))
    assert re.findall(r"\]\(#([^)]*)\)", contents) == [d.slug(h.text) for h in level2]


def test_every_table_row_is_in_both_formats(sample):
    md, page = d.to_markdown(sample), parse(d.to_html(sample))
    tables = d.tables(sample.blocks)
    assert len(tables) == 3
    same_in_both(sample, md, d.to_html(sample))  # every cell, unescaped, in its own column ("|x" added none)
    want = [[t.columns] + [[text_of(c) for c in row] for row in t.rows] for t in tables]
    assert md_tables(md) == page.tables == want
    # missing values are blank in both, numbers as tabulate writes them
    assert want[0][2] == [HOSTILE, "", "2"] and want[0][1] == ["mse", "23.5", "2"]
    # links: Markdown links and <a href>, the href percent-encoded once, never re-escaped
    assert f"[{d.md_text(HOSTILE)}](models/x%7Cy/model.safetensors)" in md
    assert ("a", {"href": "models/x%7Cy/model.safetensors"}) in parse(d.to_html(sample)).tags
    # sortable tables carry the class the inline script looks for; each table sits in its own scrolling wrapper
    html = d.to_html(sample)
    assert html.count("<div class='scroll'><table") == 3 and "<table class='board sortable'>" in html


def test_a_hostile_name_stays_text_in_both_formats(sample):
    html = d.to_html(sample)
    page = parse(html)
    assert len(page.scripts) == 1 and not page.scripts[0]  # the inline script only, no src
    assert {t for t, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p",
                                         "em", "strong", "code", "ul", "li", "nav", "ol", "a", "div", "table",
                                         "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption",
                                         "details", "summary", "pre", "label", "select", "option", "span",
                                         "script"}
    assert "<script>alert" not in html and HOSTILE not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;|x") >= 10  # escaped wherever it was put
    alts = [a.get("alt") for t, a in page.tags if t == "img"]  # attributes too, parsed back to the text
    assert HOSTILE in alts and f"{HOSTILE}: 21.00" in alts
    # Markdown: outside code, every <, > and | is backslash-escaped; inside code blocks the name is literal
    md = d.to_markdown(sample)
    # a fence longer than the code's own ```: the block does not end early
    assert f"````bash\ncolorbench ablate --grid '{HOSTILE}'\n```\nnot the end of the block\n````" in md
    prose = re.sub(r"````.*?````", "", md, flags=re.DOTALL)
    prose = re.sub(r"```.*?```", "", prose, flags=re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    assert re.search(r"(?<!\\)[<>]", prose) is None
    assert d.md_text(HOSTILE) == r"\<script\>alert(1)\</script\>\|x"
    assert "the listing of \\<script\\>alert(1)\\</script\\>\\|x is in `run.json`" in md  # Details' Markdown text


def test_marks_are_html_only_where_the_text_has_them():
    assert d.html_inline("**a** *b* `c<d>` & e") == "<strong>a</strong> <em>b</em> <code>c&lt;d&gt;</code> &amp; e"
    assert d.html_text("*a* `b`") == "*a* `b`"  # literal text: no marks
    assert d.md_text("a|b `c|d` <e>") == r"a\|b `c|d` \<e\>"


def test_renderers_refuse_what_is_not_a_block():
    doc = d.Document("t", ["raw <b>html</b>"])
    with pytest.raises(TypeError):
        d.to_html(doc)
    with pytest.raises(TypeError):
        d.to_markdown(doc)


def test_the_report_escapes_nothing_itself():
    """Escaping is done in one place: bench.report passes raw text to the document model."""
    source = inspect.getsource(report)
    assert not re.search(r"html\.escape|import html\b|md_text\(|html_text\(|html_attr\(|html_inline\(|_md_safe", source)
    assert not re.search(r"<(p|div|table|tr|td|th|h[1-6]|ul|li|a|span|pre|code|img|figure|details|strong|em)[ >]",
                         source)  # no HTML written by hand
