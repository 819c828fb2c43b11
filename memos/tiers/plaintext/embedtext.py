"""What is embedded and lexically indexed for a cube: its text through its namespace's
templates.

Two templates per namespace (``"*"`` for the others), each a ``str.format`` pattern over
``{text}``, ``{namespace}`` and the cube's metadata keys:

- the **index text** (``PlaintextSettings.embed_templates``), such as ``"{speaker}: {text}"``:
  the cube's own words, so that a name in a question ("when did Caroline...") matches the
  turns Caroline spoke. Column ``embed_text``, with a full-text (BM25) index.
- the **context** (``PlaintextSettings.context_templates``), such as ``"{context}"``: what
  situates the cube but is not its own words: the turns before it in a conversation, the
  title and section of a document's passage. The **situated text** is the index text with
  its context after it (column ``situated_text``, with a BM25 index of its own), and it is
  what gets embedded. Without a context it is the index text.

Why both: a turn such as "Yes, I did it last week!" names nothing a question could match,
and its context says what "it" was; but context also brings in words the cube never said,
so the cube's own words keep a ranked list of their own, and search fuses the two
("contextual retrieval": BM25 and embeddings over chunks with their context prepended, as
in Anthropic's 2024 write-up; here the context is the client's, never generated). The
rendered texts are stored beside the cube, so a re-embedding after a model change embeds
the very text the old model did, and ``reindex`` can tell which rows a changed template
affects.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from memos.cube import MemCube

ANY_NAMESPACE = "*"
# Between a cube's own words and its context: a sentence break for the tokenizer and the
# embedding model alike.
CONTEXT_SEPARATOR = "\n"


class _Templates:
    """One kind of per-namespace template, and how it renders a cube."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self._templates = dict(templates)
        self._fields = {
            ns: tuple(f for _, f, _, _ in string.Formatter().parse(t) if f is not None)
            for ns, t in self._templates.items()
        }

    def __bool__(self) -> bool:
        return bool(self._templates)

    def render(self, cube: MemCube, text: str) -> str | None:
        """The cube through its namespace's template; None when it has none, or lacks a key
        the template names (a half-filled template, "  : text", would index noise)."""
        namespace = cube.namespace
        key = namespace if namespace in self._templates else ANY_NAMESPACE
        if key not in self._templates:
            return None
        values: dict[str, str] = {"namespace": namespace, **cube.metadata, "text": text}
        if any(f not in values for f in self._fields[key]):
            return None
        return self._templates[key].format_map(values)


class EmbedText:
    """Renders a cube's index text and its situated text from the per-namespace templates."""

    def __init__(
        self, templates: Mapping[str, str], context_templates: Mapping[str, str] | None = None
    ) -> None:
        self._index = _Templates(templates)
        self._context = _Templates(context_templates or {})

    @property
    def contextual(self) -> bool:
        """Whether any namespace has a context template (search then ranks the situated
        texts too)."""
        return bool(self._context)

    def render(self, cube: MemCube) -> str:
        """The index text (the cube's own words): "" for cubes without a plaintext payload."""
        if cube.plaintext is None:
            return ""
        text = cube.plaintext.text
        rendered = self._index.render(cube, text)
        return text if rendered is None else rendered

    def context(self, cube: MemCube) -> str:
        """The cube's context through its namespace's context template, "" for none."""
        if cube.plaintext is None or not self._context:
            return ""
        rendered = self._context.render(cube, cube.plaintext.text)
        return "" if rendered is None else rendered.strip()

    def texts(self, cube: MemCube) -> tuple[str, str]:
        """The index text and the situated text, the template rendered once."""
        own = self.render(cube)
        context = self.context(cube)
        return own, f"{own}{CONTEXT_SEPARATOR}{context}" if context else own

    def situated(self, cube: MemCube) -> str:
        """What is embedded: the index text, then the context when there is one."""
        return self.texts(cube)[1]
