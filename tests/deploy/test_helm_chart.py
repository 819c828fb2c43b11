"""The Helm chart, rendered by Helm's own Go library (helm-python-sdk, no helm binary)."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from typing import Any

import pytest

pytest.importorskip("kubernetes_validate", reason="validates against the API schemas")

from tests.deploy import invariants as inv
from tests.deploy.manifests import kubectl, kustomize, load_all, validate
from tests.deploy.paths import CHART, KUBERNETES_VERSION, KUSTOMIZE
from tests.deploy.settings_names import is_setting

helm = pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart")

RELEASE = "rel"
NAMESPACE = "memos"
ENGINE_TOKEN = "engine-token-0123456789abcdef"
APP_TOKEN_SHA256 = hashlib.sha256(b"an application token").hexdigest()
REDIS_URL = "redis://:s3cr3t-pass@redis.example:6379/0"

SHARED: dict[str, Any] = {
    "mode": "shared",
    "auth": {"tokens": [{"name": "app", "tokenSha256": APP_TOKEN_SHA256, "tenant": "acme"}]},
    "redis": {"url": REDIS_URL},
    "memosd": {"plaintextUri": "s3://memos-plaintext/memos"},
}
SIDECAR: dict[str, Any] = {
    "mode": "sidecar",
    "auth": {"tokens": [{"tokenSha256": APP_TOKEN_SHA256, "tenant": "acme", "scopes": ["read"]}]},
    "sidecar": {"engineToken": {"value": ENGINE_TOKEN}},
}
SECRET_VALUES = [ENGINE_TOKEN, REDIS_URL, "s3cr3t-pass"]


def render(values: dict[str, Any]) -> list[inv.Doc]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in load_all(text)
    ]


def _with(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    values = copy.deepcopy(base)
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def _memosd(docs: list[inv.Doc]) -> inv.Doc:
    return next(c.spec for c in inv.containers(docs) if c.name == inv.MEMOSD)


def _secret(docs: list[inv.Doc], suffix: str) -> inv.Doc:
    return next(
        d for d in inv.by_kind(docs, "Secret") if d["metadata"]["name"].endswith(f"-{suffix}")
    )


@pytest.mark.parametrize("values", [SHARED, SIDECAR], ids=["shared", "sidecar"])
def test_chart_validates_and_keeps_every_rule(
    values: dict[str, Any], memosd_image: inv.ImageDefaults
) -> None:
    docs = render(values)
    kinds = sorted(d["kind"] for d in docs)
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"} <= set(kinds)
    for doc in docs:
        validate(doc)
    assert inv.violations(docs, memosd_image, SECRET_VALUES) == []


def test_every_memos_variable_is_a_daemon_setting() -> None:
    values = _with(SHARED, memosd__extraEnv={"MEMOS_LIMITS__MAX_K": 50})
    for docs in (render(values), render(SIDECAR)):
        names = inv.memos_env_names(docs)
        assert {"MEMOS_DRAIN_GRACE_S", "MEMOS_AUTH__TOKENS_FILE"} <= names
        assert sorted(n for n in names if not is_setting(n)) == []


def test_the_secret_check_sees_a_leak(memosd_image: inv.ImageDefaults) -> None:
    docs = render(_with(SHARED, memosd__extraEnv={"MEMOS_NOTE": "s3cr3t-pass"}))
    found = inv.violations(docs, memosd_image, SECRET_VALUES)
    assert any("ConfigMap" in v and "secret value" in v for v in found), found


def test_engine_token_digest_lands_in_the_daemon_tokens() -> None:
    docs = render(SIDECAR)
    tokens = tomllib.loads(_secret(docs, "auth")["stringData"]["tokens.toml"])["tokens"]
    digests = {t["token_sha256"]: t for t in tokens}
    engine = digests[hashlib.sha256(ENGINE_TOKEN.encode()).hexdigest()]
    assert engine["scopes"] == ["read", "write"]
    assert digests[APP_TOKEN_SHA256]["scopes"] == ["read"]
    assert _secret(docs, "engine-token")["stringData"]["token"] == ENGINE_TOKEN
    assert ENGINE_TOKEN not in _secret(docs, "auth")["stringData"]["tokens.toml"]


def test_existing_secrets_are_referenced_not_rendered() -> None:
    values = _with(
        SIDECAR,
        auth={"existingSecret": "my-tokens"},
        sidecar__engineToken={"existingSecret": "my-engine-token"},
        redis={"existingSecret": "my-redis"},
    )
    docs = render(values)
    assert inv.by_kind(docs, "Secret") == []
    pod = inv.pod_spec(inv.workloads(docs)[0])
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"my-tokens", "my-engine-token"}
    redis = {e["name"]: e for e in _memosd(docs)["env"]}["MEMOS_REDIS_URL"]
    assert redis["valueFrom"]["secretKeyRef"]["name"] == "my-redis"


def test_engine_token_value_with_an_existing_tokens_secret_fails() -> None:
    values = _with(SIDECAR, auth={"existingSecret": "my-tokens"})
    with pytest.raises(helm.HelmError, match="engineToken"):
        render(values)


def test_service_monitor_selects_the_metrics_port() -> None:
    docs = render(_with(SHARED, metrics={"serviceMonitor": {"enabled": True}}))
    (monitor,) = inv.by_kind(docs, "ServiceMonitor")
    validate(monitor)  # a custom resource: allowed through without a schema
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in inv.by_kind(docs, "Service") if s["spec"].get("clusterIP") != "None"]
    (service,) = [s for s in services if inv._selects(selector, s["metadata"]["labels"])]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "bogus"}, "/mode"),
        ({"shared__replicas": "two"}, "/shared/replicas"),
        ({"shared__replicass": 3}, "replicass"),
        ({"auth": {"tokens": [{"tokenSha256": "not-hex", "tenant": "acme"}]}}, "tokenSha256"),
        (
            {"auth": {"tokens": [{"tokenSha256": "a" * 64, "tenant": "a", "scopes": ["root"]}]}},
            "scopes",
        ),
        ({"auth": {"tokens": []}}, "/auth"),
        ({"redis": {"url": ""}}, "/redis"),
        ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
        ({"memosd__plaintextUri": "/var/lib/memos/plaintext"}, "plaintextUri"),
        ({"memosd__extraEnv": {"MEMOS_REDIS_URL": "redis://x"}}, "MEMOS_REDIS_URL"),
        ({"memosd__extraEnv": {"PATH": "/x"}}, "PATH"),
        ({"memosd__logFormat": "xml"}, "logFormat"),
        ({"memosd__resources": {"requests": {"cpu": "one core"}}}, "cpu"),
        ({"image__pullPolicy": "Sometimes"}, "pullPolicy"),
    ],
)
def test_schema_rejects_a_wrong_shared_value(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render(_with(SHARED, **overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sidecar__engineToken": {"value": ""}}, "engineToken"),
        ({"sidecar__engineToken": {"value": "short"}}, "engineToken"),
        ({"sidecar__vllm": {"maxLoraRank": 7}}, "maxLoraRank"),
        ({"sidecar__vllm": {"port": 50051}}, "port"),
        ({"sidecar__vllm": {"extraArgs": ["--kv-transfer-config={}"]}}, "extraArgs"),
    ],
)
def test_schema_rejects_a_wrong_sidecar_value(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        render(_with(SIDECAR, **overrides))


def test_chart_lints_clean() -> None:
    for values in (SHARED, SIDECAR):
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
        assert report["errors"] == [], report
        assert all(m["severity"] <= 1 for m in report["messages"]), report


def _comparable(container: inv.Doc) -> dict[str, Any]:
    keep = ("ports", "startupProbe", "livenessProbe", "readinessProbe", "securityContext")
    spec = {k: container.get(k) for k in keep}
    spec["resources"] = container.get("resources")
    spec["mounts"] = sorted(m["mountPath"] for m in container.get("volumeMounts", []))
    spec["env"] = sorted(e["name"] for e in container.get("env", []))
    return spec


@pytest.mark.skipif(kubectl() is None, reason="kubectl renders the kustomize side")
@pytest.mark.parametrize("values", [SHARED, SIDECAR], ids=["shared", "sidecar"])
def test_chart_and_kustomize_describe_the_same_pods(values: dict[str, Any]) -> None:
    # The overlay's sidecar takes a Redis URL when its Secret exists; the chart when told to.
    chart = render(_with(values, redis={"existingSecret": "memos-redis"}))
    overlay = kustomize(KUSTOMIZE / "overlays" / values["mode"])
    assert _comparable(_memosd(chart)) == _comparable(_memosd(overlay))
    if values["mode"] == "sidecar":
        engine = [
            next(c.spec for c in inv.containers(docs) if c.name == inv.VLLM)
            for docs in (chart, overlay)
        ]
        configs = [
            json.loads(inv.flag_value(c["args"], "--kv-transfer-config") or "") for c in engine
        ]
        assert configs[0] == configs[1]
        assert _comparable(engine[0]) == _comparable(engine[1])
