"""Rendering manifests: kustomize overlays with kubectl, and validation against the API schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.paths import KUBERNETES_VERSION

# Custom resources have no schema in kubernetes-validate: only these may go unvalidated.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def kubectl() -> str | None:
    return shutil.which("kubectl")


def kustomize(overlay: Path) -> list[dict[str, Any]]:
    binary = kubectl()
    if binary is None:
        raise FileNotFoundError("kubectl is not installed (.ci/deploy-check installs it)")
    out = subprocess.run(
        [binary, "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return load_all(out)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate(doc: dict[str, Any]) -> None:
    """Raise unless ``doc`` validates, strictly, against the pinned Kubernetes release."""
    import kubernetes_validate  # type: ignore[import-untyped]

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        if (doc.get("apiVersion"), doc.get("kind")) not in CUSTOM_KINDS:
            raise
