"""Lexical (BM25) search over ``embed_text``, through LanceDB's native full-text index.

The index (``FTS_INDEX``) uses LanceDB's standard English analysis: the simple tokenizer
(split on whitespace and punctuation), lower-casing, ASCII folding, English stop words
removed and Snowball (Porter-style) stemming, scored with BM25 (k1 1.2, b 0.75, LanceDB's
defaults). Nothing in it is tuned to a data set.

Kept current on every write: rows committed after the index was built (new puts, the rewritten
rows of an update) are not in it, and LanceDB scans them (a flat BM25 over the unindexed
fragments) and merges the results, while deleted rows are masked out of the index at once. So
a search right after a write sees it, as with the vector index; compaction (``optimize``)
folds the new rows into the index. Filters are SQL evaluated before ranking (``prefilter``).

BM25's document frequencies are those of the whole table (every tenant), as LanceDB keeps one
index per column: a tenant's scores depend slightly on other tenants' texts, never its hits.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from lancedb.index import FTS
from lancedb.table import Table

from memos.tiers.plaintext.schema import EMBED_TEXT

log = logging.getLogger(__name__)

FTS_INDEX = f"{EMBED_TEXT}_fts"
SCORE = "_score"


def fts_config() -> FTS:
    return FTS(
        with_position=False,
        base_tokenizer="simple",
        language="English",
        lower_case=True,
        stem=True,
        remove_stop_words=True,
        ascii_folding=True,
    )


def has_fts_index(table: Table) -> bool:
    return FTS_INDEX in {cfg.name for cfg in table.list_indices()}


def ensure_fts_index(table: Table) -> bool:
    """Create the full-text index when it is missing (an empty table gets one too, so the
    index exists before the first row); True when one was created."""
    if has_fts_index(table):
        return False
    log.info("building the full-text index on %s", EMBED_TEXT)
    table.create_index(EMBED_TEXT, config=fts_config(), replace=True, name=FTS_INDEX)
    return True


def lexical_rows(table: Table, query: str, where: str, limit: int, columns: list[str]) -> pa.Table:
    """The ``limit`` rows passing ``where`` that score best for ``query`` (BM25), best first,
    with their score in ``_score``; none when the query has no indexable term."""
    return (
        table.search(query, query_type="fts", fts_columns=EMBED_TEXT)
        .where(where, prefilter=True)
        .select([*columns, SCORE])
        .limit(limit)
        .to_arrow()
    )
