"""What every rendered manifest set must satisfy, kustomize overlay or Helm chart alike.

``violations(docs, image)`` returns one line per broken rule, so a failing test names all of
them at once and the negative tests can check that a rule really fires.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

Doc = dict[str, Any]

MEMOSD = "memosd"
VLLM = "vllm"
READINESS_SERVICE = "memos.v1.MemCubeService"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Names whose values are credentials: they must come from a Secret, never a literal or ConfigMap.
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|ACCESS_KEY|CREDENTIAL|REDIS_URL", re.I)
# A URL with a password in it (redis://:pw@host, s3 with keys, ...).
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.I)


@dataclass(frozen=True)
class ImageDefaults:
    """What the memosd image sets, read from its Dockerfile."""

    env: Mapping[str, str]
    grpc_port: int
    metrics_port: int
    data_dir: str


@dataclass(frozen=True)
class Container:
    workload: Doc
    spec: Doc
    init: bool

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def where(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}:{self.name}"

    @property
    def pod(self) -> Doc:
        return pod_spec(self.workload)


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d.get("kind") in WORKLOAD_KINDS]


def containers(docs: list[Doc]) -> Iterator[Container]:
    for workload in workloads(docs):
        pod = pod_spec(workload)
        for spec in pod.get("initContainers", []):
            yield Container(workload, spec, init=True)
        for spec in pod.get("containers", []):
            yield Container(workload, spec, init=False)


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of ``--flag=value`` or ``--flag value`` in an argument list."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _secret_volume_paths(container: Container) -> list[PurePosixPath]:
    secret_volumes = {
        v["name"] for v in container.pod.get("volumes", []) if "secret" in v or "projected" in v
    }
    return [
        PurePosixPath(m["mountPath"])
        for m in container.spec.get("volumeMounts", [])
        if m["name"] in secret_volumes
    ]


def _under(path: str, roots: list[PurePosixPath]) -> bool:
    return any(PurePosixPath(path).is_relative_to(root) for root in roots)


def _config_map_env(docs: list[Doc], container: Container) -> dict[str, str]:
    names = {
        src["configMapRef"]["name"]
        for src in container.spec.get("envFrom", [])
        if "configMapRef" in src
    }
    env: dict[str, str] = {}
    for cm in by_kind(docs, "ConfigMap"):
        if cm["metadata"]["name"] in names:
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
    return env


def effective_env(docs: list[Doc], container: Container, image: ImageDefaults) -> dict[str, str]:
    """Literal environment memosd sees: image defaults, then ConfigMaps, then literal env."""
    env = dict(image.env)
    env.update(_config_map_env(docs, container))
    for item in container.spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env.pop(item["name"], None)
    return env


def _check_security(container: Container) -> Iterator[str]:
    pod_sc = container.pod.get("securityContext", {})
    sc = container.spec.get("securityContext", {})
    where = container.where
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        yield f"{where}: runAsNonRoot is not set"
    if sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None):
        yield f"{where}: runAsUser must be a non-zero uid"
    if sc.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: readOnlyRootFilesystem is not true"
    if sc.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation is not false"
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        yield f"{where}: capabilities are not all dropped"
    if sc.get("capabilities", {}).get("add"):
        yield f"{where}: adds capabilities"
    if sc.get("privileged"):
        yield f"{where}: privileged"
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        yield f"{where}: seccompProfile is not RuntimeDefault"
    resources = container.spec.get("resources", {})
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(part, {}):
                yield f"{where}: no {resource} {part}"


def _check_env_secrets(container: Container) -> Iterator[str]:
    secret_roots = _secret_volume_paths(container)
    for item in container.spec.get("env", []):
        name = item["name"]
        if name.endswith("_FILE") and SECRET_NAME.search(name):
            if not _under(str(item.get("value", "")), secret_roots):
                yield f"{container.where}: {name} does not point into a Secret volume"
        elif SECRET_NAME.search(name):
            if "secretKeyRef" not in item.get("valueFrom", {}):
                yield f"{container.where}: {name} is not taken from a Secret"
        elif URL_WITH_PASSWORD.search(str(item.get("value", ""))):
            yield f"{container.where}: {name} holds a URL with a password"


def _check_memosd(docs: list[Doc], container: Container, image: ImageDefaults) -> Iterator[str]:
    where = container.where
    spec = container.spec
    ports = {p.get("name"): p.get("containerPort") for p in spec.get("ports", [])}
    if ports.get("grpc") != image.grpc_port or ports.get("metrics") != image.metrics_port:
        yield f"{where}: ports must be grpc={image.grpc_port} and metrics={image.metrics_port}"
    for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = spec.get(probe_name)
        if not probe or "grpc" not in probe:
            yield f"{where}: {probe_name} is not a native grpc probe"
            continue
        if probe["grpc"].get("port") != image.grpc_port:
            yield f"{where}: {probe_name} probes port {probe['grpc'].get('port')}"
        service = probe["grpc"].get("service", "")
        wanted = READINESS_SERVICE if probe_name == "readinessProbe" else ""
        if service != wanted:
            yield f"{where}: {probe_name} asks for service {service!r}, wants {wanted!r}"
    env = effective_env(docs, container, image)
    host = env.get("MEMOS_LISTEN", "").rpartition(":")[0]
    if host not in LOOPBACK and not env.get("MEMOS_AUTH__TOKENS_FILE"):
        yield f"{where}: listens on {host!r} without MEMOS_AUTH__TOKENS_FILE"
    mounts = {m["mountPath"]: m for m in spec.get("volumeMounts", []) if not m.get("readOnly")}
    data_dir = env.get("MEMOS_DATA_DIR", image.data_dir)
    for path in (data_dir, "/tmp"):
        if path not in mounts:
            yield f"{where}: {path} is not a writable volume (the root filesystem is read-only)"
    grace = container.pod.get("terminationGracePeriodSeconds", 30)
    drain = float(env.get("MEMOS_DRAIN_GRACE_S", 10))
    if grace <= drain:
        yield f"{where}: terminationGracePeriodSeconds {grace} leaves no room for a {drain}s drain"
    beside_vllm = any(c.name == VLLM for c in containers([container.workload]))
    if beside_vllm and not (container.init and spec.get("restartPolicy") == "Always"):
        yield f"{where}: beside vLLM, memosd must be a native sidecar (restartPolicy: Always)"


def _check_vllm(container: Container, image: ImageDefaults) -> Iterator[str]:
    where = container.where
    args = [str(a) for a in container.spec.get("command", []) + container.spec.get("args", [])]
    raw = flag_value(args, "--kv-transfer-config")
    if raw is None:
        yield f"{where}: no --kv-transfer-config"
        return
    kv = json.loads(raw)
    expected = {
        "kv_connector": "MemCubeKVConnector",
        "kv_connector_module_path": "memos.integrations.vllm.connector",
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
    }
    for key, value in expected.items():
        if kv.get(key) != value:
            yield f"{where}: kv-transfer-config {key}={kv.get(key)!r}, wants {value!r}"
    extra = kv.get("kv_connector_extra_config", {})
    if extra.get("daemon") != f"127.0.0.1:{image.grpc_port}":
        yield f"{where}: the connector does not dial memosd on localhost: {extra.get('daemon')}"
    token_file = extra.get("token_file")
    if not token_file or not _under(token_file, _secret_volume_paths(container)):
        yield f"{where}: the connector's token_file is not in a Secret volume"
    if flag_value(args, "--prefix-caching-hash-algo") != "sha256_cbor":
        yield f"{where}: --prefix-caching-hash-algo must be sha256_cbor"
    if "--enable-lora" not in args:
        yield f"{where}: --enable-lora missing"
    env = {e["name"]: e.get("value") for e in container.spec.get("env", [])}
    if env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") != "True":
        yield f"{where}: VLLM_ALLOW_RUNTIME_LORA_UPDATING is not True"
    if "memos" not in str(env.get("VLLM_PLUGINS", "")).split(","):
        yield f"{where}: VLLM_PLUGINS does not load memos"
    memosd = [c for c in containers([container.workload]) if c.name == MEMOSD]
    shared = {(m["name"], m["mountPath"]) for c in memosd for m in c.spec.get("volumeMounts", [])}
    adapters = [
        m for m in container.spec.get("volumeMounts", []) if (m["name"], m["mountPath"]) in shared
    ]
    if not adapters:
        yield f"{where}: no LoRA adapter volume shared with memosd at the same path"
    elif not all(m.get("readOnly") for m in adapters):
        yield f"{where}: the shared adapter volume must be read-only in vLLM"


def _check_secret_values(docs: list[Doc], secret_values: list[str]) -> Iterator[str]:
    for doc in docs:
        if doc.get("kind") == "Secret":
            continue
        text = json.dumps(doc)
        for value in secret_values:
            encoded = base64.b64encode(value.encode()).decode()
            if value in text or encoded in text:
                where = f"{doc['kind']}/{doc['metadata']['name']}"
                yield f"{where}: a secret value appears outside a Secret"
    for cm in by_kind(docs, "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            if SECRET_NAME.search(key) or URL_WITH_PASSWORD.search(str(value)):
                yield f"ConfigMap/{cm['metadata']['name']}: {key} looks like a secret"


def _check_disruption_and_metrics(docs: list[Doc], image: ImageDefaults) -> Iterator[str]:
    pdbs = by_kind(docs, "PodDisruptionBudget")
    services = by_kind(docs, "Service")
    for workload in workloads(docs):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        if not any(_selects(p["spec"]["selector"].get("matchLabels", {}), labels) for p in pdbs):
            yield f"{name}: no PodDisruptionBudget selects its pods"
        if pod_spec(workload).get("automountServiceAccountToken") is not False:
            yield f"{name}: automountServiceAccountToken is not false"
        if not any(c.name == MEMOSD for c in containers([workload])):
            continue
        metrics = [
            port
            for svc in services
            if _selects(svc["spec"].get("selector", {}), labels)
            for port in svc["spec"].get("ports", [])
            if port.get("name") == "metrics"
        ]
        if not any(p.get("port") == image.metrics_port for p in metrics):
            yield f"{name}: no Service exposes a port named metrics on {image.metrics_port}"


def violations(
    docs: list[Doc], image: ImageDefaults, secret_values: list[str] | None = None
) -> list[str]:
    found: list[str] = []
    if not any(c.name == MEMOSD for c in containers(docs)):
        found.append("no memosd container")
    for container in containers(docs):
        found.extend(_check_security(container))
        found.extend(_check_env_secrets(container))
        if container.name == MEMOSD:
            found.extend(_check_memosd(docs, container, image))
        if container.name == VLLM:
            found.extend(_check_vllm(container, image))
    found.extend(_check_secret_values(docs, secret_values or []))
    found.extend(_check_disruption_and_metrics(docs, image))
    return found


def memos_env_names(docs: list[Doc]) -> set[str]:
    """Every MEMOS_* variable the manifests set, literally or through a ConfigMap."""
    names = {
        str(key)
        for cm in by_kind(docs, "ConfigMap")
        for key in cm.get("data", {})
        if str(key).startswith("MEMOS_")
    }
    for container in containers(docs):
        names.update(
            e["name"] for e in container.spec.get("env", []) if e["name"].startswith("MEMOS_")
        )
    return names
