"""The report's document model and its two renderers: a report is built once as a list of blocks, then written as
plain Markdown (:func:`to_markdown`) and as one self-contained HTML page (:func:`to_html`).

Whoever builds a document passes raw text and never escapes it. Paragraphs and list items may hold the few Markdown
marks of the report's prose (``**bold**``, ``*italic*``, ```code```); every other text (headings, table cells, link
texts, captions, code, summaries) is literal. Escaping is done here only, once per format: the Markdown renderer
backslash-escapes ``<``, ``>``, ``&`` and ``|`` outside code spans (a cell or folder name never becomes raw HTML or
breaks a table), the HTML renderer escapes every text and attribute (:func:`html_text`, :func:`html_attr`,
:func:`html_inline`).

The HTML page embeds its images as data: URIs and carries a few lines of inline script (sortable tables, the
gallery's switch): one file that works offline.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

# ----------------------------------------------------------------------------------------------------- blocks


@dataclass
class Heading:
    """A heading.

    Args:
        level: 1 (the title) to 6; level 2 headings are the sections that :class:`Contents` lists.
        text: literal text.
        anchor: the HTML id ("" : derived from the text as GitHub derives a Markdown heading's anchor).
    """

    level: int
    text: str
    anchor: str = ""


@dataclass
class Paragraph:
    """A paragraph of prose.

    Args:
        text: text with the few Markdown marks (``**bold**``, ``*italic*``, ```code```).
        style: "" (plain), "note" (smaller) or "warn" (boxed); HTML only, the Markdown shows the text alone.
    """

    text: str
    style: str = ""


@dataclass
class List:
    """A bulleted list.

    Args:
        items: one text each, with the few Markdown marks (as :class:`Paragraph`).
        style: an HTML class of the list ("verdict": spaced items); HTML only.
    """

    items: list[str]
    style: str = ""


@dataclass
class Link:
    """A link in a table cell.

    Args:
        text: literal text.
        href: a relative URL, already percent-encoded (``urllib.parse.quote``).
    """

    text: str
    href: str


Cell = Union[str, Link]


@dataclass
class Table:
    """A table of text (and links); each renderer escapes the cells its own way.

    Args:
        columns: the header's literal texts.
        rows: one list of cells per row, as many as ``columns``.
        sortable: a click on a header sorts the HTML table (the inline script); the Markdown is a plain table.
        style: an HTML class ("board": cells do not wrap); HTML only.
    """

    columns: list[str]
    rows: list[list[Cell]]
    sortable: bool = False
    style: str = ""

    @classmethod
    def from_frame(cls, df, sortable: bool = False, style: str = "") -> Table:
        """The table of a ``pandas.DataFrame`` (its index left out): missing values blank, other values as text.

        Args:
            df: the data frame; a cell may also hold a :class:`Link`.
            sortable, style: as the fields.
        """
        return cls([str(c) for c in df.columns], [[cell_text(v) for v in row] for row in df.itertuples(index=False)],
                   sortable, style)


def cell_text(v) -> Cell:
    """A table value as text: None and NaN blank, a float as tabulate writes it (``g``), a link kept.

    Args:
        v: any value of a data frame.
    """
    if isinstance(v, (str, Link)):
        return v
    if v is None or (isinstance(v, float) and v != v):
        return ""
    try:
        if v != v:  # NaN of numpy or pandas
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return format(float(v), "g")
    return str(v)


@dataclass
class Image:
    """A figure: a PNG file with its caption.

    Args:
        path: the file; the HTML embeds it as a data: URI.
        link: the file's path relative to the Markdown file (the Markdown links it).
        alt: literal alternative text.
        caption: literal caption ("" : none).
    """

    path: Path
    link: str
    alt: str
    caption: str = ""


@dataclass
class Code:
    """A block of literal text in a monospaced font (commands, a configuration file).

    Args:
        text: literal text.
        language: the Markdown fence's language ("bash", "yaml"; "" : none).
    """

    text: str
    language: str = ""


@dataclass
class Details:
    """Blocks folded under a summary in the HTML (``<details>``).

    Args:
        summary: literal text.
        blocks: the folded blocks.
        markdown: what the Markdown shows instead, a paragraph with the few marks; None: the summary followed by
            the blocks (plain Markdown cannot fold; a long listing that the run folder holds anyway is better named
            than repeated).
    """

    summary: str
    blocks: list = field(default_factory=list)
    markdown: str | None = None


@dataclass
class Contents:
    """The table of contents: a link to every level-2 heading of the document, in order.

    Args:
        label: literal text before the links.
    """

    label: str = "Contents"


@dataclass
class GalleryCard:
    """One test image of a :class:`Gallery`.

    Args:
        name: literal name of the image.
        input: its greyscale input (None: not saved).
        truth: its ground truth (None: not saved).
        shots: (choice index, colorization file, literal label with its score) for each choice that has one.
    """

    name: str
    input: Path | None
    truth: Path | None
    shots: list[tuple[int, Path, str]]


@dataclass
class Gallery:
    """Sample images with a switch between choices (cells): the HTML shows one choice's colorizations at a time.

    Args:
        choices: the switch's literal options, in order (the first is shown first).
        cards: one per test image.
        folder: where the images are, relative to the Markdown file (the Markdown names it).
    """

    choices: list[str]
    cards: list[GalleryCard]
    folder: str = "samples/"


Block = Union[Heading, Paragraph, List, Table, Image, Code, Details, Contents, Gallery]


@dataclass
class Document:
    """A whole report.

    Args:
        title: literal title of the HTML page (its ``<title>``); the visible title is a level-1 :class:`Heading`.
        blocks: the blocks in reading order.
    """

    title: str
    blocks: list[Block]


def blocks_of(blocks: list[Block], kind: type) -> list:
    """Every block of one type in reading order, folded ones (inside :class:`Details`) included.

    Args:
        blocks: the blocks.
        kind: the block type, e.g. :class:`Heading`.
    """
    out = []
    for b in blocks:
        if isinstance(b, kind):
            out.append(b)
        elif isinstance(b, Details):
            out += blocks_of(b.blocks, kind)
    return out


def headings(blocks: list[Block]) -> list[Heading]:
    """Every heading of the blocks in reading order, folded ones included."""
    return blocks_of(blocks, Heading)


def tables(blocks: list[Block]) -> list[Table]:
    """Every table of the blocks in reading order, folded ones included."""
    return blocks_of(blocks, Table)


def slug(text: str) -> str:
    """The anchor GitHub gives a Markdown heading of this text.

    Args:
        text: the heading's literal text.
    """
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(doc: Document) -> dict[int, str]:
    """The HTML id of every heading, by ``id()`` of the heading: its anchor, else the slug of its text; a repeated
    id gets ``-1``, ``-2`` ... as GitHub numbers repeated headings.

    Args:
        doc: the document.
    """
    out, seen = {}, {}
    for h in headings(doc.blocks):
        base = h.anchor or slug(h.text) or "section"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out[id(h)] = base if n == 0 else f"{base}-{n}"
    return out


# ----------------------------------------------------------------------------------------------------- Markdown


def md_text(text) -> str:
    """Text for the Markdown with ``<``, ``>``, ``&`` and ``|`` backslash-escaped outside `code` spans: names of
    folders, files or cells never become raw HTML or break a table.

    Args:
        text: text with the few Markdown marks, or literal text.
    """
    parts = str(text).split("`")
    return "`".join(p if i % 2 else re.sub(r"([<>&|])", r"\\\1", p) for i, p in enumerate(parts))


def _md_cell(c: Cell) -> str:
    """A table cell for the Markdown: escaped, on one line; a link as a Markdown link.

    Args:
        c: the cell.
    """
    if isinstance(c, Link):
        return f"[{md_text(c.text)}]({c.href})"
    return md_text(c).replace("\r", " ").replace("\n", " ")


def _md_table(t: Table) -> str:
    """A table as a Markdown pipe table (tabulate's, as ``DataFrame.to_markdown`` writes it).

    Args:
        t: the table.
    """
    from tabulate import tabulate

    if not t.columns:
        return ""
    return tabulate([[_md_cell(c) for c in row] for row in t.rows], headers=[_md_cell(c) for c in t.columns],
                    tablefmt="pipe", disable_numparse=True)


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in the text.

    Args:
        text: the code.
    """
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _md_block(b: Block, doc: Document) -> list[str]:
    """The Markdown paragraphs of one block (the caller joins them with blank lines).

    Args:
        b: the block.
        doc: the whole document (the contents list its headings).
    """
    if isinstance(b, Heading):
        return ["#" * b.level + " " + md_text(b.text)]
    if isinstance(b, Paragraph):
        return [md_text(b.text)]
    if isinstance(b, List):
        return ["\n".join(f"- {md_text(s)}" for s in b.items)] if b.items else []
    if isinstance(b, Table):
        return [_md_table(b)] if b.columns else []
    if isinstance(b, Image):
        return [f"![{md_text(b.alt)}]({b.link})"] + ([f"_{md_text(b.caption)}_"] if b.caption else [])
    if isinstance(b, Code):
        fence = _fence(b.text)
        return [f"{fence}{b.language}\n{b.text}\n{fence}"]
    if isinstance(b, Details):
        if b.markdown is not None:
            return [md_text(b.markdown)]
        return [md_text(b.summary) + ":"] + [p for x in b.blocks for p in _md_block(x, doc)]
    if isinstance(b, Contents):
        links = [f"[{md_text(h.text)}](#{slug(h.text)})" for h in headings(doc.blocks) if h.level == 2]
        return [f"{md_text(b.label)}: " + " · ".join(links)] if links else []
    if isinstance(b, Gallery):  # plain Markdown has no switch: where the images are, what the HTML offers
        return [md_text(f"The {len(b.cards)} test images are in `{b.folder}`; report.html shows them with a switch "
                        "between the cells: " + ", ".join(b.choices) + ".")] if b.cards else []
    raise TypeError(f"not a block of the document model: {b!r}")


def to_markdown(doc: Document) -> str:
    """The document as plain Markdown: no raw HTML, every name escaped (:func:`md_text`), figures linked.

    Args:
        doc: the document.
    """
    return "\n\n".join(p for b in doc.blocks for p in _md_block(b, doc)) + "\n"


# ----------------------------------------------------------------------------------------------------- HTML

CSS = """
*{box-sizing:border-box}[hidden]{display:none!important}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ccc;padding-bottom:.2em;font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
h1,h2,h3,p,li,figcaption,summary{overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f2f2f2;white-space:nowrap}tr:nth-child(even) td{background:#fafafa}
table.board td{white-space:nowrap}
table.sortable th{cursor:pointer}table.sortable th[data-dir=asc]::after{content:" ▲"}
table.sortable th[data-dir=desc]::after{content:" ▼"}
ul.verdict li{margin:.3em 0}
nav.toc{background:#f6f8fa;padding:.4em 1em;border:1px solid #e3e3e3}nav.toc ol{margin:.3em 0;padding-left:1.4em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em;white-space:pre-wrap;word-break:break-all}
.note{font-size:.92em;color:#333}.warn{background:#fff4e5;border-left:4px solid #f0a000;padding:.4em .8em}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:.8em}
.card{margin:0;border:1px solid #e3e3e3;padding:.3em}.trio{display:flex;gap:2px}
.trio span{flex:1;min-width:0;text-align:center;font-size:.75em;color:#555}.trio img{width:100%;height:auto;display:block}
@media (max-width:600px){body{margin:.5em auto;padding:0 .6em}h1{font-size:1.3em}}
"""

#: inline script: click a header of a ``sortable`` table to sort it (numbers by value); the gallery's switch
SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.tabIndex=0;th.title='click to sort';
th.addEventListener('click',function(){var t=th.closest('table'),b=t.tBodies[0],row=th.parentNode,
i=Array.prototype.indexOf.call(row.children,th),asc=th.dataset.dir!=='asc';
row.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=asc?'asc':'desc';
function key(r){var s=(r.cells[i]||{}).textContent||'',m=s.replace(/\u2212/g,'-').match(/[-+]?\\d+(\\.\\d+)?(e[-+]?\\d+)?/i);
return m?parseFloat(m[0]):s.trim().toLowerCase()}
Array.from(b.rows).sort(function(x,y){var a=key(x),c=key(y),o=typeof a===typeof c?(a<c?-1:a>c?1:0):(typeof a==='number'?-1:1);
return asc?o:-o}).forEach(function(r){b.appendChild(r)})})});
var pick=document.getElementById('gallery-cell');if(pick){pick.addEventListener('change',function(){
document.querySelectorAll('.gallery img[data-cell]').forEach(function(im){im.hidden=im.dataset.cell!==pick.value})})}
"""


def html_text(text) -> str:
    """Literal text escaped for HTML element content (``&``, ``<``, ``>``).

    Args:
        text: literal text.
    """
    return html.escape(str(text), quote=False)


def html_attr(text) -> str:
    """Literal text escaped for a quoted HTML attribute (quotes too).

    Args:
        text: literal text.
    """
    return html.escape(str(text), quote=True)


def html_inline(text) -> str:
    """Text with the few Markdown marks (**bold**, *italic*, `code`) as escaped HTML.

    Args:
        text: text with the few Markdown marks.
    """
    t = html_text(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI.

    Args:
        path: the file.
    """
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def thumbnail_uri(path: Path, side: int = 256) -> str:
    """A JPEG of at most ``side`` pixels a side as a data: URI (a gallery holds every test image × cell).

    Args:
        path: an image file.
        side: the longer side's limit in pixels.
    """
    import io

    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cls(*names: str) -> str:
    """An HTML class attribute of the non-empty names ("" when none).

    Args:
        names: class names.
    """
    names = [n for n in names if n]
    return f" class='{html_attr(' '.join(names))}'" if names else ""


def _html_cell(c: Cell) -> str:
    """A table cell as escaped HTML; a link as ``<a href>``.

    Args:
        c: the cell.
    """
    if isinstance(c, Link):
        return f"<a href='{html_attr(c.href)}'>{html_text(c.text)}</a>"
    return html_text(c)


def _html_table(t: Table) -> str:
    """A table in its own scrolling wrapper (a wide table never widens the page), ``sortable`` for the script.

    Args:
        t: the table.
    """
    head = "".join(f"<th>{html_text(c)}</th>" for c in t.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return (f"<div class='scroll'><table{_cls(t.style, 'sortable' if t.sortable else '')}>\n<thead><tr>{head}</tr>"
            f"</thead>\n<tbody>\n{body}\n</tbody></table></div>")


def _html_gallery(g: Gallery) -> str:
    """The gallery: the switch between cells, then one card per test image (input, colorizations, truth).

    Args:
        g: the gallery; its images are embedded as JPEG thumbnails.
    """
    options = "".join(f"<option value='{i}'>{html_text(label)}</option>" for i, label in enumerate(g.choices))

    def side(f, what):
        return f"<span><img src='{thumbnail_uri(f)}' alt='{what}'>{what}</span>" if f is not None and f.is_file() \
            else f"<span>{what}</span>"

    cards = []
    for card in g.cards:
        shots = "".join(f"<img data-cell='{i}'{'' if i == 0 else ' hidden'} loading='lazy' src='{thumbnail_uri(f)}' "
                        f"alt='{html_attr(label)}' title='{html_attr(label)}'>" for i, f, label in card.shots)
        cards.append(f"<figure class='card'><div class='trio'>{side(card.input, 'input')}<span>{shots}colorized"
                     f"</span>{side(card.truth, 'truth')}</div><figcaption>{html_text(card.name)}</figcaption>"
                     "</figure>")
    return (f"<p><label for='gallery-cell'>Cell: </label><select id='gallery-cell'>{options}</select> "
            f"<span class='note'>({len(cards)} test images; hover a colorization for its score)</span></p>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def _html_block(b: Block, doc: Document, ids: dict[int, str]) -> list[str]:
    """The HTML lines of one block.

    Args:
        b: the block.
        doc: the whole document (the contents list its headings).
        ids: :func:`anchors` of the document.
    """
    if isinstance(b, Heading):
        return [f"<h{b.level} id='{html_attr(ids[id(b)])}'>{html_text(b.text)}</h{b.level}>"]
    if isinstance(b, Paragraph):
        return [f"<p{_cls(b.style)}>{html_inline(b.text)}</p>"]
    if isinstance(b, List):
        return [f"<ul{_cls(b.style)}>"] + [f"<li>{html_inline(s)}</li>" for s in b.items] + ["</ul>"] \
            if b.items else []
    if isinstance(b, Table):
        return [_html_table(b)] if b.columns else []
    if isinstance(b, Image):
        return [f"<figure><img src='{data_uri(b.path)}' alt='{html_attr(b.alt)}'>"
                + (f"<figcaption>{html_text(b.caption)}</figcaption>" if b.caption else "") + "</figure>"]
    if isinstance(b, Code):
        return [f"<pre>{html_text(b.text)}</pre>"]
    if isinstance(b, Details):
        return [f"<details><summary>{html_text(b.summary)}</summary>",
                *(line for x in b.blocks for line in _html_block(x, doc, ids)), "</details>"]
    if isinstance(b, Contents):
        links = [f"<li><a href='#{html_attr(ids[id(h)])}'>{html_text(h.text)}</a></li>"
                 for h in headings(doc.blocks) if h.level == 2]
        return [f"<nav class='toc' aria-label='{html_attr(b.label)}'><strong>{html_text(b.label)}</strong><ol>",
                *links, "</ol></nav>"] if links else []
    if isinstance(b, Gallery):
        return [_html_gallery(b)] if b.cards else []
    raise TypeError(f"not a block of the document model: {b!r}")


def to_html(doc: Document) -> str:
    """The document as one self-contained HTML page: viewport tag, inline style, images as data: URIs, every table
    in its own scrolling wrapper, the inline script; every text escaped (:func:`html_text`, :func:`html_attr`,
    :func:`html_inline`).

    Args:
        doc: the document.
    """
    ids = anchors(doc)
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>{html_text(doc.title)}</title>", f"<style>{CSS}</style></head><body>"]
    out += [line for b in doc.blocks for line in _html_block(b, doc, ids)]
    out += [f"<script>{SCRIPT}</script>", "</body></html>"]
    return "\n".join(out)
