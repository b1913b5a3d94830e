"""User text made safe for every output: a study, budget, preset or file name can hold a newline (a
forged `::error::` line in a CI log), an ANSI escape (which restyles or rewrites the terminal), a
bidi override or a character XML cannot hold. One escaper per kind of output:

- `printable`: terminals and logs; control and invisible characters are shown as Python escapes
  (`\\n`, `\\x1b`, `\\u202e`), so the text stays readable and cannot act;
- `xml_safe`: XML 1.0 text and attributes (JUnit), which cannot hold most control characters even
  as character references;
- `SafeConsole`: a rich Console that applies `printable` to everything it prints (newlines of the
  layout excepted), so no string reaches a terminal raw whatever path it took.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from rich.console import Console
from rich.segment import Segment


def _escape_char(ch: str) -> str:
    return ascii(ch)[1:-1]  # "\n" -> "\\n", "\x1b" -> "\\x1b", "\u202e" -> "\\u202e"


def printable(text: str, keep: str = "") -> str:
    """`text` with every character that is not printable (controls, ESC, C1 codes, line and
    paragraph separators, bidi and zero-width format characters) written as its Python escape;
    characters in `keep` (e.g. "\\n") stay as they are."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escape_char(ch) for ch in text)


# XML 1.0 allows TAB, LF, CR and these ranges, nothing else (not even as &#1;)
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` with every character XML 1.0 cannot hold written as its Python escape."""
    return _XML_INVALID.sub(lambda m: _escape_char(m.group()), text)


class SafeConsole(Console):
    """A rich Console whose output holds no raw control character from the text it prints: each
    text segment goes through `printable` (the layout's own newlines and rich's control segments,
    such as a progress bar's cursor moves, are kept; styles are added after this step)."""

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable():
                yield segment
            else:
                yield Segment(printable(segment.text, keep="\n"), segment.style, segment.control)
