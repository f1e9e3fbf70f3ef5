"""Model cards: Markdown from the Hub made safe to show, and the plain text the search reads.

A card is hostile input. It is rendered with markdown-it-py (raw HTML allowed, since Hub cards use it)
and the result is sanitized by nh3 (ammonia) with a short allow-list: no script, style, event
handler, ``javascript:`` URL, form or frame survives. Images never load: a Markdown image becomes a
link to it, an HTML ``<img>`` is dropped. Relative links point at the file on the Hub at the pinned
revision. Headings move down two levels, under the page's own ``<h1>`` and "Model card" ``<h2>``.
The front matter is split off: the page shows it as facts, not as text.

Example::

    >>> front, body = split_front_matter("---\\nlicense: mit\\n---\\n# Hi <script>x</script>\\n")
    >>> front, render_card(body, "https://huggingface.co/org/m", "a" * 40)
    ({'license': 'mit'}, '<h3>Hi </h3>\\n')
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import nh3
import yaml
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
SUMMARY_CHARS = 200
SEARCH_WORDS = 400  # distinct words of a card the search index keeps (the rarest say most, but order is cheaper)

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "details", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp",
    "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u",
    "ul", "var",
}  # fmt: skip
ATTRIBUTES = {
    "a": {"href", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "nofollow noopener noreferrer"
_HEADING = re.compile(r"<(/?)h([1-6])\b")
_WORD = re.compile(r"[^\W_]{2,}")


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """The card's YAML front matter (``{}`` when absent or not a mapping) and the Markdown after it."""
    match = FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    try:
        value = yaml.safe_load(match[1])
    except yaml.YAMLError:
        value = None
    return (value if isinstance(value, dict) else {}), text[match.end() :]


@dataclass(frozen=True)
class Card:
    """A model card read once: its safe HTML, its first paragraph, and its words for the search."""

    html: str
    summary: str
    text: str


def read_card(markdown: str, hub_url: str = "", revision: str = "") -> Card:
    """Parse a card's Markdown once; ``hub_url`` and ``revision`` resolve its relative links."""
    if not markdown.strip():
        return Card("", "", "")
    base = f"{hub_url}/blob/{revision or 'main'}/"
    parser = _markdown()
    env = {"base": base}
    tokens = parser.parse(markdown, env)
    html = _sanitize(parser.renderer.render(tokens, parser.options, env), base)
    return Card(html, _summary(tokens), _text(tokens))


def render_card(markdown: str, hub_url: str, revision: str) -> str:
    """Safe HTML for a card's Markdown."""
    return read_card(markdown, hub_url, revision).html


def summary(markdown: str) -> str:
    """The card's first paragraph of prose, cut at a word near :data:`SUMMARY_CHARS` characters."""
    return read_card(markdown).summary


def _sanitize(html: str, base: str) -> str:
    def rewrite(tag: str, attribute: str, value: str) -> str | None:
        return _resolve(value, base) if attribute == "href" else value

    clean = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style", "textarea", "title", "noscript"},
        attributes=ATTRIBUTES,
        attribute_filter=rewrite,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
    )
    clean = _HEADING.sub(lambda m: f"<{m[1]}h{min(int(m[2]) + 2, 6)}", clean)
    # Code and wide tables scroll sideways on a phone: a scrolling region must take keyboard focus.
    clean = clean.replace("<pre>", '<pre tabindex="0">')
    return clean.replace(
        "<table>", '<div class="scroll" tabindex="0" role="region" aria-label="Table"><table>'
    ).replace("</table>", "</table></div>")


def _text(tokens: Sequence[Token]) -> str:
    """The card's words as plain text; code blocks are left out (code says little about what the model is)."""
    words = [_inline_text(token.children) for token in tokens if token.type == "inline" and token.children]
    return " ".join(" ".join(words).split())


def _summary(tokens: Sequence[Token]) -> str:
    for opening, inline in itertools.pairwise(tokens):
        if opening.type == "paragraph_open" and inline.children:
            sentence = " ".join(_inline_text(inline.children).split())
            if len(sentence) >= 20:
                if len(sentence) <= SUMMARY_CHARS:
                    return sentence
                return sentence[:SUMMARY_CHARS].rsplit(" ", 1)[0] + "…"
    return ""


def search_words(text: str) -> str:
    """Distinct lower-case words of ``text`` in first-seen order, at most :data:`SEARCH_WORDS`."""
    seen = dict.fromkeys(word.lower() for word in _WORD.findall(text))
    return " ".join(list(seen)[:SEARCH_WORDS])


def _inline_text(children: Sequence[Token]) -> str:
    """The words of an inline run: text and code as they are, line breaks as spaces, markup dropped."""
    return "".join(
        child.content if child.type in ("text", "code_inline") else " " if child.type.endswith("break") else ""
        for child in children
    )


def _resolve(href: str, base: str) -> str | None:
    """Absolute URLs and fragments as they are; a relative link points at the file on the Hub."""
    href = href.strip()
    if href.startswith("#"):
        return href
    if urlsplit(href).scheme:
        return href if urlsplit(href).scheme.lower() in URL_SCHEMES else None
    if href.startswith("//"):
        return "https:" + href
    return urljoin(base, href)


class _CardRenderer(RendererHTML):
    """markdown-it's HTML renderer, except that an image becomes a link to it: nothing loads."""

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children or [], options, env) or "image"
        src = _resolve(str(token.attrGet("src") or ""), str(env.get("base", "")))
        if src is None:
            return f"[{_escape(alt)}]"
        return f'<a href="{_escape(src)}">[image: {_escape(alt)}]</a>'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


_MARKDOWN: MarkdownIt | None = None


def _markdown() -> MarkdownIt:
    global _MARKDOWN
    if _MARKDOWN is None:
        _MARKDOWN = MarkdownIt("commonmark", {"html": True}, renderer_cls=_CardRenderer).enable(
            ["table", "strikethrough"]
        )
    return _MARKDOWN
