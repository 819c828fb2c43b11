"""A small Dockerfile reader: stages, instructions, ENV, the entry point and the COPY steps.

The deploy tests read the container's command and environment from the Dockerfile itself, and
CI stages the build context by replaying the build stage's COPY lines, so neither can drift from
the image. It covers the subset of the syntax our Dockerfile uses and fails loudly on the rest.

    python -m tests.deploy.dockerfile stage-context DOCKERFILE STAGE CONTEXT_DIR ROOT_DIR
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(ValueError):
    """The Dockerfile uses a form this reader does not understand."""


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # everything after the keyword, continuation lines joined
    line: int  # 1-based line of the keyword

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Leading ``--name=value`` flags (RUN --mount, COPY --from) and the rest."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; drop comments and blank lines (as Docker does)."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((start, " ".join(p for p in current if p)))
        current = []
    if current:
        raise DockerfileError("the file ends inside a line continuation")
    return lines


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(text):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            parts = instruction.args.split()
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.append(Stage(parts[0], parts[2]))
            elif len(parts) == 1:
                stages.append(Stage(parts[0], None))
            else:
                raise DockerfileError(f"line {number}: unsupported FROM {instruction.args!r}")
        elif not stages:
            if instruction.keyword != "ARG":
                raise DockerfileError(f"line {number}: {keyword} before the first FROM")
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)


def load(path: Path) -> Dockerfile:
    return parse(path.read_text())


def expand(value: str, env: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` from ``env``; a name it lacks is an error, not an empty string."""

    def sub(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name not in env:
            raise DockerfileError(f"${name} is not defined")
        return env[name]

    if re.search(r"\$\{[^}]*[:?+-]", value):
        raise DockerfileError(f"parameter operators are not supported: {value!r}")
    return _VAR.sub(sub, value)


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """The ``key=value`` pairs of one ENV line, quotes removed, variables left unexpanded."""
    tokens = shlex.split(instruction.args.replace("$", "\0"), posix=True)
    pairs: list[tuple[str, str]] = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise DockerfileError(f"line {instruction.line}: use ENV key=value")
        pairs.append((key, value.replace("\0", "$")))
    return pairs


def stage_env(stage: Stage, inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment a stage's last instruction sees, with ``inherited`` as the base image's.

    Only the ENV lines count: ARG values do not reach a container's environment.
    """
    env = dict(inherited)
    declared: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for key, raw in env_pairs(instruction):
            value = expand(raw, env)
            env[key] = value
            declared[key] = value
    return declared


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT or CMD (the shell form would break signals)."""
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError as exc:
        raise DockerfileError(
            f"line {instruction.line}: {instruction.keyword} not exec form"
        ) from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DockerfileError(f"line {instruction.line}: exec form must be a list of strings")
    return [str(v) for v in value]


def command(stage: Stage) -> list[str]:
    """What the container runs: ENTRYPOINT followed by CMD."""
    entry = stage.last("ENTRYPOINT")
    cmd = stage.last("CMD")
    argv = (exec_form(entry) if entry else []) + (exec_form(cmd) if cmd else [])
    if not argv:
        raise DockerfileError("the stage has neither ENTRYPOINT nor CMD")
    return argv


def stage_context(stage: Stage, context: Path, root: Path) -> None:
    """Replay the stage's COPY lines from ``context`` into ``root`` as if it were ``/``."""
    workdir = PurePosixPath("/")
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
            (root / workdir.relative_to("/")).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword in ("COPY", "ADD"):
            flags, rest = instruction.flags_and_rest()
            if "from" in flags:
                continue  # from another stage, not from the context
            if instruction.keyword == "ADD" or rest.startswith("["):
                raise DockerfileError(f"line {instruction.line}: use COPY SRC... DEST")
            *sources, dest_text = rest.split()
            dest = workdir / dest_text
            into_dir = dest_text.endswith("/") or len(sources) > 1
            target = root / dest.relative_to("/")
            for source in sources:
                src = context / source
                if not src.exists():
                    raise DockerfileError(
                        f"line {instruction.line}: {source} is not in the context"
                    )
                if src.is_dir():
                    shutil.copytree(
                        src,
                        target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    )
                else:
                    out = target / src.name if into_dir else target
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, out)


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] != "stage-context":
        print(__doc__, file=sys.stderr)
        return 2
    dockerfile, stage, context, root = argv[1:]
    stage_context(load(Path(dockerfile)).stage(stage), Path(context), Path(root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
