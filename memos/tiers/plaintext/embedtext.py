"""What is embedded and lexically indexed for a cube: its text through its namespace's template.

A template (``PlaintextSettings.embed_templates``, by namespace, ``"*"`` for the others) is a
``str.format`` pattern over ``{text}``, ``{namespace}`` and the cube's metadata keys, such as
``"{speaker}: {text}"``: a name in a question ("when did Caroline...") then matches the
turns Caroline spoke, for BM25 and for the embedding alike. The rendered text is stored
beside the cube (column ``embed_text``), so a re-embedding after a model change embeds the
very text the old model did, and ``reindex`` can tell which rows a changed template affects.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from memos.cube import MemCube

DEFAULT_TEMPLATE = "{text}"
ANY_NAMESPACE = "*"


class EmbedText:
    """Renders a cube's index text from the per-namespace templates."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self._templates = dict(templates)
        self._fields = {
            ns: tuple(f for _, f, _, _ in string.Formatter().parse(t) if f is not None)
            for ns, t in self._templates.items()
        }

    def template(self, namespace: str) -> str:
        return self._templates.get(namespace, self._templates.get(ANY_NAMESPACE, DEFAULT_TEMPLATE))

    def render(self, cube: MemCube) -> str:
        """The text to embed and index; "" for cubes without a plaintext payload."""
        if cube.plaintext is None:
            return ""
        text = cube.plaintext.text
        namespace = cube.namespace
        if namespace not in self._templates and ANY_NAMESPACE not in self._templates:
            return text
        key = namespace if namespace in self._templates else ANY_NAMESPACE
        values: dict[str, str] = {"namespace": namespace, **cube.metadata, "text": text}
        if any(f not in values for f in self._fields[key]):
            # A half-filled template ("  : text") would index noise: fall back to the text.
            return text
        return self._templates[key].format_map(values)
