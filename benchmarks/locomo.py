"""LoCoMo evidence recall of hybrid, lexical and dense search, through the daemon's gRPC API.

``python -m benchmarks.locomo --data FILE [--k 10] [--context 2] [--fusion rrf|convex] [--json]
[--quick]``

FILE is LoCoMo's JSON (``locomo10.json``, or the dev subset ``../shared/data/locomo_dev.json``;
CC BY-NC 4.0: read it from where it lies, never commit it). The benchmark starts ``memosd`` as
its own process, with the embed template ``"{speaker}: {text}"`` and the context template
``"{context}"`` for its namespace, then:

- ingests every turn of every conversation as one cube (``PutBatch``, one tenant per
  conversation, one client thread each), its text the turn's text (and the caption of a
  shared image, which is all the data keeps of it), its metadata the speaker, the dialog id
  (``dia_id``), the session and its date, and its ``context``: the ``--context`` turns
  before it in its session, most recent first, each as ``speaker: text``, cut to the
  daemon's metadata value limit (what a chat client knows when it stores a turn; the
  daemon embeds the turn with its context and ranks both the turn's own words and the
  situated text, see ``memos/tiers/plaintext/embedtext.py``);
- runs the compaction job once, so the full-text index covers the rows, as it would in a
  daemon that has run for a while;
- for every question of categories 1 to 4 (1 multi-hop, 2 temporal, 3 open-domain, 4
  single-hop; 5, adversarial, has no evidence to find), searches the conversation's tenant
  for the top k in each mode, and scores the hits' dialog ids against the question's
  evidence ids: ``turn_recall`` (the mean over questions of the share of evidence turns found),
  ``all_evidence`` (the share of questions with every evidence turn found) and
  ``session_hit`` (the share with a hit in an evidence session).

Evidence lists are split on ``[;, ]`` (LoCoMo packs several ids in one string at times); ids
that name no turn of the conversation are dropped, and questions left without evidence are
skipped. The retrieval is standard: BM25 (LanceDB's English analyzer), MiniLM, a convex
combination with equal weights (or RRF with k = 60), the speaker prefix of the LoCoMo
paper's own retrieval setup. One choice was made looking at this data: two turns of context
(``--context 2``; 1 measured lower on the dev conversations, 3 and 4 about the same).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Target, base_parser, emit_json, percentile, print_table, print_targets
from benchmarks.daemon import Daemon
from memos.client import CubeInput, JobsClient, MemosClient

NAME = "locomo"
NAMESPACE = "locomo"
TEMPLATE = "{speaker}: {text}"
CONTEXT_TEMPLATE = "{context}"
CONTEXT_TURNS = 2
# The daemon's default metadata value limit (limits.max_metadata_value_chars).
CONTEXT_CHARS = 1024
MODES = ("hybrid", "lexical", "dense")
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
BATCH = 128
TARGET_RECALL = 0.70
QUICK_CONVERSATIONS = 1
QUICK_QUESTIONS = 60
_SPLIT = re.compile(r"[;,\s]+")


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: str
    date: str


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    sample_id: str
    tenant: str
    turns: list[Turn]
    questions: list[Question]


@dataclass
class Scores:
    """Per-question scores of one mode, by category."""

    turn: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    all_found: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    session: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    latency_ms: list[float] = field(default_factory=list)

    def add(self, category: int, evidence: frozenset[str], found: Sequence[str]) -> None:
        hit = evidence & set(found)
        self.turn[category].append(len(hit) / len(evidence))
        self.all_found[category].append(float(hit == evidence))
        sessions = {session_of(d) for d in found}
        self.session[category].append(float(any(session_of(e) in sessions for e in evidence)))

    def summary(self, categories: Sequence[int] | None = None) -> dict[str, float]:
        cats = categories or sorted(self.turn)

        def mean(per: dict[int, list[float]]) -> float:
            values = [v for c in cats for v in per.get(c, [])]
            return sum(values) / len(values) if values else 0.0

        return {
            "turn_recall": mean(self.turn),
            "all_evidence": mean(self.all_found),
            "session_hit": mean(self.session),
            "questions": float(sum(len(self.turn.get(c, [])) for c in cats)),
        }


def session_of(dia_id: str) -> str:
    return dia_id.split(":", 1)[0]


def load(path: Path) -> list[Conversation]:
    samples: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    conversations = []
    for sample in samples:
        conv = sample["conversation"]
        turns: list[Turn] = []
        for key, value in conv.items():
            m = re.fullmatch(r"session_(\d+)", key)
            if not m or not isinstance(value, list):
                continue
            date = str(conv.get(f"{key}_date_time", ""))
            for t in value:
                text = str(t.get("text", ""))
                if t.get("blip_caption"):
                    text = f"{text} [shares a photo: {t['blip_caption']}]".strip()
                if not text:
                    continue
                turns.append(Turn(str(t["dia_id"]), str(t["speaker"]), text, m.group(1), date))
        known = {t.dia_id for t in turns}
        questions = []
        for qa in sample.get("qa", []):
            category = int(qa.get("category", 0))
            if category not in CATEGORIES:
                continue
            evidence = frozenset(
                e for ref in qa.get("evidence", []) for e in _SPLIT.split(str(ref)) if e in known
            )
            if evidence:
                questions.append(Question(str(qa["question"]), category, evidence))
        sample_id = str(sample["sample_id"])
        tenant = re.sub(r"[^a-z0-9_-]", "-", f"locomo-{sample_id}".lower())[:63]
        conversations.append(Conversation(sample_id, tenant, turns, questions))
    return conversations


def contexts(turns: Sequence[Turn], n: int) -> list[str]:
    """Each turn's context: up to ``n`` turns before it in its session, most recent first,
    as ``speaker: text`` lines, cut to ``CONTEXT_CHARS``."""
    out = []
    for i, turn in enumerate(turns):
        lines: list[str] = []
        # Sessions are contiguous in the data: stop at the first turn of another one.
        for t in reversed(turns[max(0, i - n) : i]):
            if t.session != turn.session:
                break
            lines.append(f"{t.speaker}: {t.text}")
        out.append("\n".join(lines)[:CONTEXT_CHARS])
    return out


def ingest(addr: str, conv: Conversation, context_turns: int) -> int:
    context = contexts(conv.turns, context_turns)
    with MemosClient(addr, tenant=conv.tenant, timeout=300.0) as client:
        for start in range(0, len(conv.turns), BATCH):
            batch = range(start, min(start + BATCH, len(conv.turns)))
            client.put_batch(
                CubeInput(
                    text=conv.turns[i].text,
                    namespace=NAMESPACE,
                    metadata={
                        "speaker": conv.turns[i].speaker,
                        "dia_id": conv.turns[i].dia_id,
                        "session": conv.turns[i].session,
                        "session_date": conv.turns[i].date,
                        "sample_id": conv.sample_id,
                        **({"context": context[i]} if context[i] else {}),
                    },
                )
                for i in batch
            )
    return len(conv.turns)


def evaluate(addr: str, conv: Conversation, k: int, scores: dict[str, Scores]) -> None:
    with MemosClient(addr, tenant=conv.tenant, timeout=60.0) as client:
        for q in conv.questions:
            for mode in MODES:
                t0 = time.perf_counter()
                hits = client.search(q.text, k=k, mode=mode, namespaces=[NAMESPACE])
                scores[mode].latency_ms.append((time.perf_counter() - t0) * 1000)
                found = [h.cube.metadata.get("dia_id", "") for h in hits]
                scores[mode].add(q.category, q.evidence, found)


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo JSON file")
    parser.add_argument("--k", type=int, default=10, help="hits per search (default 10)")
    parser.add_argument(
        "--fusion",
        choices=("rrf", "convex"),
        default="convex",
        help="the daemon's hybrid fusion (plaintext.fusion; default convex, the daemon's default)",
    )
    parser.add_argument(
        "--context",
        type=int,
        default=CONTEXT_TURNS,
        help=f"turns of context stored with each turn (default {CONTEXT_TURNS}; 0: none)",
    )
    args = parser.parse_args(argv)

    conversations = load(args.data)
    if args.quick:
        conversations = conversations[:QUICK_CONVERSATIONS]
        for conv in conversations:
            conv.questions = conv.questions[:QUICK_QUESTIONS]
    turns = sum(len(c.turns) for c in conversations)
    questions = sum(len(c.questions) for c in conversations)
    print(f"{len(conversations)} conversations, {turns} turns, {questions} questions (cat 1-4)")

    # The daemon inherits this process's environment: its namespace's template goes there.
    os.environ["MEMOS_PLAINTEXT__EMBED_TEMPLATES"] = json.dumps({NAMESPACE: TEMPLATE})
    os.environ["MEMOS_PLAINTEXT__CONTEXT_TEMPLATES"] = json.dumps(
        {NAMESPACE: CONTEXT_TEMPLATE} if args.context > 0 else {}
    )
    os.environ["MEMOS_PLAINTEXT__FUSION"] = args.fusion
    scores = {mode: Scores() for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="memos-locomo-") as tmp:
        daemon = Daemon(Path(tmp), index_interval_s=3600.0)
        try:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max(1, len(conversations))) as pool:
                list(pool.map(lambda c: ingest(daemon.addr, c, args.context), conversations))
            ingest_s = time.perf_counter() - t0
            with MemosClient(daemon.addr, timeout=600.0) as admin:
                JobsClient(admin).run_job("compact")
            t0 = time.perf_counter()
            for conv in conversations:
                evaluate(daemon.addr, conv, args.k, scores)
            search_s = time.perf_counter() - t0
        finally:
            daemon.stop()

    cats = sorted(CATEGORIES)
    rows = []
    for mode in MODES:
        for c in cats:
            s = scores[mode].summary([c])
            if s["questions"]:
                rows.append(
                    [
                        mode,
                        f"{c} {CATEGORIES[c]}",
                        int(s["questions"]),
                        100 * s["turn_recall"],
                        100 * s["all_evidence"],
                        100 * s["session_hit"],
                    ]
                )
        s = scores[mode].summary(cats)
        rows.append(
            [
                mode,
                "all 1-4",
                int(s["questions"]),
                100 * s["turn_recall"],
                100 * s["all_evidence"],
                100 * s["session_hit"],
            ]
        )
    print_table(
        f"LoCoMo evidence recall@{args.k} (%)",
        ["mode", "category", "questions", "turn recall", "all evidence", "session hit"],
        rows,
    )
    lat_rows = [
        [
            m,
            percentile(scores[m].latency_ms, 50),
            percentile(scores[m].latency_ms, 99),
        ]
        for m in MODES
    ]
    print_table("search latency (ms, gRPC round trip)", ["mode", "p50", "p99"], lat_rows)
    print(
        f"\ningestion: {turns} turns in {ingest_s:.1f} s = {turns / ingest_s:.0f} turns/s "
        f"({len(conversations)} concurrent clients); {questions * len(MODES)} searches in "
        f"{search_s:.1f} s"
    )

    results: dict[str, Any] = {
        "k": args.k,
        "conversations": len(conversations),
        "turns": turns,
        "questions": questions,
        "quick": args.quick,
        "fusion": args.fusion,
        "context_turns": args.context,
        "ingest_turns_per_s": turns / ingest_s,
    }
    for mode in MODES:
        overall = scores[mode].summary(cats)
        results[mode] = {
            "turn_recall": overall["turn_recall"],
            "all_evidence": overall["all_evidence"],
            "session_hit": overall["session_hit"],
            "latency_ms_p50": percentile(scores[mode].latency_ms, 50),
            "latency_ms_p99": percentile(scores[mode].latency_ms, 99),
            "by_category": {
                str(c): scores[mode].summary([c]) for c in cats if scores[mode].turn.get(c)
            },
        }
    targets = {
        f"hybrid_turn_recall_at_{args.k}": Target(results["hybrid"]["turn_recall"], TARGET_RECALL),
    }
    print_targets(targets)
    if args.json:
        emit_json(NAME, results, targets)


if __name__ == "__main__":
    main()
