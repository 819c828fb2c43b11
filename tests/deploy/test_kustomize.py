"""The kustomize overlays: rendered by ``kubectl kustomize``, validated, and held to the rules."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache

import pytest

pytest.importorskip("kubernetes_validate", reason="validates against the API schemas")

from tests.deploy import invariants as inv
from tests.deploy.manifests import kubectl, kustomize, validate
from tests.deploy.paths import KUSTOMIZE, OVERLAYS
from tests.deploy.settings_names import is_setting

pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl is not installed (.ci/deploy-check installs it)"
)


@cache
def _render(overlay: str) -> tuple[inv.Doc, ...]:
    return tuple(kustomize(KUSTOMIZE / "overlays" / overlay))


def rendered(overlay: str) -> list[inv.Doc]:
    return copy.deepcopy(list(_render(overlay)))


def _container(docs: list[inv.Doc], name: str) -> inv.Doc:
    return next(c.spec for c in inv.containers(docs) if c.name == name)


def _env(container: inv.Doc) -> dict[str, inv.Doc]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_api_schemas(overlay: str) -> None:
    docs = rendered(overlay)
    assert docs
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_every_rule(overlay: str, memosd_image: inv.ImageDefaults) -> None:
    assert inv.violations(rendered(overlay), memosd_image) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_memos_variable_is_a_daemon_setting(overlay: str) -> None:
    names = inv.memos_env_names(rendered(overlay))
    assert "MEMOS_AUTH__TOKENS_FILE" in names
    assert sorted(n for n in names if not is_setting(n)) == []


def test_setting_names_are_checked() -> None:
    assert is_setting("MEMOS_ACTIVATION__RAM_BUDGET_BYTES")
    assert not is_setting("MEMOS_ACTIVATION__RAM_BUDGET")
    assert not is_setting("MEMOS_LISTEN__PORT")


def test_sidecar_pod_runs_memosd_beside_vllm() -> None:
    docs = rendered("sidecar")
    (deployment,) = inv.workloads(docs)
    pod = inv.pod_spec(deployment)
    assert [c["name"] for c in pod["initContainers"]] == ["memosd"]
    assert [c["name"] for c in pod["containers"]] == ["vllm"]
    assert pod["initContainers"][0]["image"].startswith("memos:")
    assert pod["containers"][0]["image"].startswith("memos-vllm:")
    # memosd's gRPC port serves its own engine only: the Service does not publish it.
    (service,) = inv.by_kind(docs, "Service")
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "metrics"}
    redis = _env(pod["initContainers"][0])["MEMOS_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert redis["optional"] is True


def test_shared_mode_scales_on_redis_and_object_storage() -> None:
    docs = rendered("shared")
    memosd = next(w for w in inv.workloads(docs) if w["metadata"]["name"] == "memosd")
    assert memosd["spec"]["replicas"] >= 2
    container = _container([memosd], "memosd")
    redis = _env(container)["MEMOS_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert redis["name"] == "memos-redis" and not redis.get("optional", False)
    (config,) = inv.by_kind(docs, "ConfigMap")
    assert config["data"]["MEMOS_PLAINTEXT__URI"].startswith("s3://")
    services = {s["metadata"]["name"]: s for s in inv.by_kind(docs, "Service")}
    assert services["memosd-headless"]["spec"]["clusterIP"] == "None"
    redis_pod = next(w for w in inv.workloads(docs) if w["metadata"]["name"] == "memos-redis")
    password = _env(_container([redis_pod], "redis"))["REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == "memos-redis"


def _drop_read_only_root(docs: list[inv.Doc]) -> None:
    _container(docs, "memosd")["securityContext"]["readOnlyRootFilesystem"] = False


def _tcp_readiness(docs: list[inv.Doc]) -> None:
    _container(docs, "memosd")["readinessProbe"] = {"tcpSocket": {"port": 50051}}


def _liveness_on_readiness_service(docs: list[inv.Doc]) -> None:
    probe = _container(docs, "memosd")["livenessProbe"]
    probe["grpc"]["service"] = inv.READINESS_SERVICE


def _redis_url_in_config_map(docs: list[inv.Doc]) -> None:
    inv.by_kind(docs, "ConfigMap")[0]["data"]["MEMOS_REDIS_URL"] = "redis://:hunter2@r:6379/0"


def _token_as_literal(docs: list[inv.Doc]) -> None:
    _container(docs, "memosd")["env"].append({"name": "MEMOS_TOKEN", "value": "abc"})


def _no_tokens(docs: list[inv.Doc]) -> None:
    container = _container(docs, "memosd")
    container["env"] = [e for e in container["env"] if e["name"] != "MEMOS_AUTH__TOKENS_FILE"]


def _no_pdb(docs: list[inv.Doc]) -> None:
    docs[:] = [d for d in docs if d["kind"] != "PodDisruptionBudget"]


def _no_limits(docs: list[inv.Doc]) -> None:
    del _container(docs, "memosd")["resources"]["limits"]


def _capabilities_kept(docs: list[inv.Doc]) -> None:
    del _container(docs, "memosd")["securityContext"]["capabilities"]


def _data_dir_on_root(docs: list[inv.Doc]) -> None:
    container = _container(docs, "memosd")
    container["volumeMounts"] = [
        m for m in container["volumeMounts"] if m["mountPath"] != "/var/lib/memos"
    ]


MUTATIONS: list[tuple[str, Callable[[list[inv.Doc]], None], str]] = [
    ("shared", _drop_read_only_root, "readOnlyRootFilesystem is not true"),
    ("shared", _tcp_readiness, "readinessProbe is not a native grpc probe"),
    ("sidecar", _liveness_on_readiness_service, "livenessProbe asks for service"),
    ("shared", _redis_url_in_config_map, "looks like a secret"),
    ("sidecar", _token_as_literal, "MEMOS_TOKEN is not taken from a Secret"),
    ("shared", _no_tokens, "without MEMOS_AUTH__TOKENS_FILE"),
    ("sidecar", _no_pdb, "no PodDisruptionBudget"),
    ("shared", _no_limits, "no memory limits"),
    ("sidecar", _capabilities_kept, "capabilities are not all dropped"),
    ("shared", _data_dir_on_root, "/var/lib/memos is not a writable volume"),
]


@pytest.mark.parametrize(
    ("overlay", "mutate", "message"), MUTATIONS, ids=[m[1].__name__ for m in MUTATIONS]
)
def test_a_broken_rule_is_reported(
    overlay: str,
    mutate: Callable[[list[inv.Doc]], None],
    message: str,
    memosd_image: inv.ImageDefaults,
) -> None:
    docs = rendered(overlay)
    mutate(docs)
    found = inv.violations(docs, memosd_image)
    assert any(message in v for v in found), found


def test_strict_validation_rejects_a_misspelt_field() -> None:
    docs = rendered("shared")
    _container(docs, "memosd")["readinesProbe"] = {"grpc": {"port": 50051}}
    deployment = next(d for d in inv.workloads(docs) if d["metadata"]["name"] == "memosd")
    with pytest.raises(Exception, match="readinesProbe"):
        validate(deployment)
