"""The indexes of the plaintext table: the ANN index on ``vector`` and scalar indexes.

The vector index is IVF_HNSW_SQ with cosine distance: an HNSW graph per IVF partition over
8-bit scalar-quantised vectors, with an exact re-rank of ``k * refine_factor`` candidates.
Measured on 100k MiniLM-like vectors on 2 cores (``benchmarks/plaintext_store.py``), it reached
recall@10 >= 0.95 at a few milliseconds per query, where IVF_PQ needed four times more probes
and refinement for the same recall, and took three times longer to build.

Rows written after the index was built (and versions rewritten by updates) are not in it:
LanceDB searches them by brute force and merges the results, so a new cube is searchable the
moment its put is acknowledged. Compaction (LanceDB's ``optimize``) folds them into the index;
``PlaintextStore.refresh_index`` retrains it when they outnumber a share of the indexed rows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from lancedb.index import BTree, HnswSq
from lancedb.table import Table

from memos.tiers.plaintext.schema import VECTOR

log = logging.getLogger(__name__)

VECTOR_INDEX = f"{VECTOR}_idx"
# Scalar indexes: `id` serves get, update and the duplicate check of puts.
SCALAR_INDEXES = ("id",)
# Rows per IVF partition. Every partition a search probes is one more graph walk and merge:
# at 100k MiniLM vectors on 2 cores, one partition answered in 4.3-4.8 ms at p50 where eight
# took 5.3-6.1 ms (ef 100 and 64, recall@10 0.976-1.00 and 0.993-1.00 on LoCoMo turns and
# the daemon benchmark's notes), for a build 15-40% longer (one graph uses one core).
ROWS_PER_PARTITION = 100_000
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 150


@dataclass(frozen=True)
class VectorIndexState:
    indexed_rows: int
    unindexed_rows: int


def vector_index_state(table: Table) -> VectorIndexState | None:
    """How many rows the vector index covers and misses, or None when there is none."""
    if VECTOR_INDEX not in {cfg.name for cfg in table.list_indices()}:
        return None
    stats = table.index_stats(VECTOR_INDEX)
    if stats is None:
        return None
    return VectorIndexState(stats.num_indexed_rows, stats.num_unindexed_rows)


def partitions_for(rows: int) -> int:
    return max(1, min(1024, math.ceil(rows / ROWS_PER_PARTITION)))


def build_vector_index(table: Table, rows: int) -> None:
    """Train and write a fresh vector index over the current rows (replacing any old one)."""
    table.create_index(
        VECTOR,
        config=HnswSq(
            distance_type="cosine",
            num_partitions=partitions_for(rows),
            m=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION,
        ),
        replace=True,
        name=VECTOR_INDEX,
    )


def ensure_scalar_indexes(table: Table) -> bool:
    """Create the scalar indexes that are missing; True when one was created."""
    have = {cfg.name for cfg in table.list_indices()}
    created = False
    for column in SCALAR_INDEXES:
        name = f"{column}_idx"
        if name not in have:
            table.create_index(column, config=BTree(), replace=True, name=name)
            created = True
    return created
