"""Fixtures of the deploy tests: the image's defaults, read from the Dockerfile."""

from __future__ import annotations

import pytest

from tests.deploy import dockerfile as df
from tests.deploy.invariants import ImageDefaults
from tests.deploy.paths import DOCKERFILE


def image_defaults() -> ImageDefaults:
    runtime = df.load(DOCKERFILE).stage("memosd")
    env = df.stage_env(runtime, {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    return ImageDefaults(
        env=env,
        grpc_port=int(env["MEMOS_LISTEN"].rpartition(":")[2]),
        metrics_port=int(env["MEMOS_METRICS_LISTEN"].rpartition(":")[2]),
        data_dir=env["MEMOS_DATA_DIR"],
    )


@pytest.fixture(scope="session")
def memosd_image() -> ImageDefaults:
    return image_defaults()
