"""The container image, read from deploy/docker/Dockerfile."""

from __future__ import annotations

import re
import shlex
import stat
import tomllib
from pathlib import Path

import pytest

from tests.deploy import dockerfile as df
from tests.deploy.paths import DEPLOY_CHECK, DOCKERFILE, DOCKERIGNORE, INSTALL_SCRIPT, REPO

# Base images the runtime stage may inherit PATH from (python:*-slim sets exactly this).
BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
# RUN lines that are not Python installs: creating the service user and its data directory.
SYSTEM_COMMANDS = {"groupadd", "useradd", "install"}
INSTALL_SUBCOMMANDS = {"wheel", "daemon", "engine"}


@pytest.fixture(scope="module")
def image() -> df.Dockerfile:
    return df.load(DOCKERFILE)


def _commands(run: df.Instruction) -> list[list[str]]:
    """The simple commands of a RUN line split on ``&&``, leading VAR=value assignments dropped."""
    _, rest = run.flags_and_rest()
    commands = []
    for part in rest.split("&&"):
        words = shlex.split(part)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words.pop(0)
        commands.append(words)
    return commands


def test_stages_and_pinned_bases(image: df.Dockerfile) -> None:
    assert [s.name for s in image.stages] == ["build", "memosd", "vllm"]
    for arg in ("PYTHON_IMAGE", "VLLM_IMAGE"):
        ref = image.global_args[arg]
        assert ":" in ref and not ref.endswith(":latest"), f"{arg} must pin a tag: {ref}"
    assert image.global_args["VLLM_IMAGE"] == "vllm/vllm-openai:v0.33.0"
    assert image.stage("memosd").base == image.stage("build").base == "${PYTHON_IMAGE}"
    assert image.stage("vllm").base == "${VLLM_IMAGE}"


def test_runtime_runs_the_console_script_as_pid_1_as_non_root(image: df.Dockerfile) -> None:
    runtime = image.stage("memosd")
    argv = df.command(runtime)  # raises unless exec form: a shell as PID 1 would eat SIGTERM
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts and scripts[argv[0]] == "memos.daemon:main"
    user = runtime.last("USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    signal = runtime.last("STOPSIGNAL")
    assert signal is None or signal.args == "SIGTERM"


def test_runtime_environment(image: df.Dockerfile) -> None:
    runtime = image.stage("memosd")
    env = df.stage_env(runtime, {"PATH": BASE_PATH})
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["PATH"].split(":")[0] == f"{env['VIRTUAL_ENV']}/bin"
    volumes = [v for i in runtime.all("VOLUME") for v in df.exec_form(i)]
    assert volumes == [env["MEMOS_DATA_DIR"]], "all data lives on the one volume"
    exposed = {p for i in runtime.all("EXPOSE") for p in i.args.split()}
    listen_port = env["MEMOS_LISTEN"].rpartition(":")[2]
    metrics_port = env["MEMOS_METRICS_LISTEN"].rpartition(":")[2]
    assert exposed == {listen_port, metrics_port} == {"50051", "9464"}
    # The runtime stage copies the built virtualenv and installs nothing of its own.
    copies = [i.flags_and_rest() for i in runtime.all("COPY")]
    assert copies == [({"from": "build"}, f"{env['VIRTUAL_ENV']} {env['VIRTUAL_ENV']}")]


def test_vllm_stage_enables_the_plugins(image: df.Dockerfile) -> None:
    stage = image.stage("vllm")
    env = df.stage_env(stage, {})
    assert "memos" in env["VLLM_PLUGINS"].split(",")
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    user = stage.last("USER")
    assert user is not None and not user.args.startswith("0") and user.args != "root"


def test_every_install_goes_through_the_script_ci_runs(image: df.Dockerfile) -> None:
    used: set[str] = set()
    for stage in image.stages:
        for run in stage.all("RUN"):
            for words in _commands(run):
                assert words, f"line {run.line}: empty command"
                if words[0] == "memos-install":
                    assert words[1] in INSTALL_SUBCOMMANDS, words
                    used.add(words[1])
                else:
                    assert words[0] in SYSTEM_COMMANDS, (
                        f"line {run.line}: {words[0]!r} runs outside deploy/docker/install.sh, "
                        "so CI does not exercise it"
                    )
    assert used == INSTALL_SUBCOMMANDS
    # The script is installed under the name the RUN lines call.
    copied = [i.args for s in image.stages for i in s.all("COPY") if "install.sh" in i.args]
    assert copied and all(c.endswith("/usr/local/bin/memos-install") for c in copied)
    ci = DEPLOY_CHECK.read_text()
    for sub in INSTALL_SUBCOMMANDS:
        assert re.search(rf"memos-install\"? {sub}\b", ci), f"CI never runs `install.sh {sub}`"


def test_install_script_pins_torch_first() -> None:
    text = INSTALL_SCRIPT.read_text()
    assert "readonly TORCH_VERSION=2.13.0" in text
    torch_at = text.index('"torch==$TORCH_VERSION"')
    assert torch_at < text.index('pip install "$wheel"'), "torch must be installed before memos"
    assert not re.search(r"pip install[^\n]*\btorch\b(?!==)", text), "never a bare torch"
    assert INSTALL_SCRIPT.stat().st_mode & stat.S_IXUSR


def test_dockerignore_lets_every_copy_source_through(image: df.Dockerfile) -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    ]
    rules = [r for r in DOCKERIGNORE.read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*", "an allowlist: ignore everything, then let paths back in"
    for stage in image.stages:
        for copy in stage.all("COPY"):
            flags, rest = copy.flags_and_rest()
            if "from" in flags:
                continue
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, f"{source} is ignored by the build context"


def test_stage_context_replays_the_copies(image: df.Dockerfile, tmp_path: Path) -> None:
    df.stage_context(image.stage("build"), REPO, tmp_path)
    assert (tmp_path / "src" / "pyproject.toml").is_file()
    assert (tmp_path / "src" / "memos" / "__init__.py").is_file()
    assert (tmp_path / "src" / "scheduler" / "__init__.py").is_file()
    assert not list((tmp_path / "src").rglob("__pycache__"))
    script = tmp_path / "usr" / "local" / "bin" / "memos-install"
    assert script.read_bytes() == INSTALL_SCRIPT.read_bytes()
    assert script.stat().st_mode & stat.S_IXUSR


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM x AS a\nENTRYPOINT memosd --listen 0.0.0.0:1\n", "not exec form"),
        ('FROM x AS a\nENV A=$UNDEFINED\nCMD ["a"]\n', "not defined"),
        ("FROM x AS a\nRUN echo \\\n", "continuation"),
        ("RUN echo\n", "before the first FROM"),
    ],
)
def test_reader_refuses_what_it_does_not_understand(text: str, message: str) -> None:
    with pytest.raises(df.DockerfileError, match=message):
        parsed = df.parse(text)
        stage = parsed.stages[0]
        df.stage_env(stage, {})
        df.command(stage)
