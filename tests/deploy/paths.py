"""Where the deploy files live, relative to the repository root."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
INSTALL_SCRIPT = DEPLOY / "docker" / "install.sh"
KUSTOMIZE = DEPLOY / "k8s"
OVERLAYS = ("sidecar", "shared")
CHART = DEPLOY / "helm" / "memos"
DEPLOY_CHECK = REPO / ".ci" / "deploy-check"

# The Kubernetes release every manifest is validated against (kubernetes-validate's schemas).
# 1.33 made native sidecars (restartable init containers) GA; the sidecar mode relies on them.
KUBERNETES_VERSION = "1.34.0"
