"""Lexical (BM25) search over ``embed_text`` and ``situated_text``, through LanceDB's native
full-text indexes (one per column: the cube's own words, and those words with its context,
see ``embedtext.py``).

Each index uses LanceDB's standard English analysis: the simple tokenizer
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

from memos.tiers.plaintext.schema import EMBED_TEXT, SITUATED_TEXT

log = logging.getLogger(__name__)

#: The indexed columns, each with its index's name.
FTS_INDEXES = {EMBED_TEXT: f"{EMBED_TEXT}_fts", SITUATED_TEXT: f"{SITUATED_TEXT}_fts"}
FTS_INDEX = FTS_INDEXES[EMBED_TEXT]
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


def has_fts_index(table: Table, column: str = EMBED_TEXT) -> bool:
    return FTS_INDEXES[column] in {cfg.name for cfg in table.list_indices()}


def ensure_fts_index(table: Table) -> bool:
    """Create the full-text indexes that are missing (an empty table gets them too, so they
    exist before the first row); True when one was created."""
    present = {cfg.name for cfg in table.list_indices()}
    created = False
    for column, name in FTS_INDEXES.items():
        if name in present:
            continue
        log.info("building the full-text index on %s", column)
        table.create_index(column, config=fts_config(), replace=True, name=name)
        created = True
    return created


def lexical_rows(
    table: Table,
    query: str,
    where: str,
    limit: int,
    columns: list[str],
    column: str = EMBED_TEXT,
) -> pa.Table:
    """The ``limit`` rows passing ``where`` whose ``column`` scores best for ``query`` (BM25),
    best first, with their score in ``_score``; none when the query has no indexable term."""
    return (
        table.search(query, query_type="fts", fts_columns=column)
        .where(where, prefilter=True)
        .select([*columns, SCORE])
        .limit(limit)
        .to_arrow()
    )
