"""Build one image for real, then run `doctor` and an export inside it (opt-in: docker/README.md, "Building
without a daemon").

tests/test_docker.py checks the Dockerfiles and docker/build.sh without an engine. This test builds
vit-deploy:onnxruntime with buildah through docker/build.sh (whose smoke test runs `doctor`, compares the
runtime-version label with the installed version, runs `pip check` and refuses a root user), then exports
hvt_digits inside the image into a host folder mounted at /artifacts. It costs minutes of CPU and a few GB
of disk, so it runs only when asked:

    VIT_DEPLOY_BUILD_IMAGES=1 BUILDAH_ISOLATION=chroot \
    VIT_DEPLOY_BUILD_OPTIONS="--storage-driver vfs --base-from-debootstrap bookworm ..." \
    python -m pytest -q tests/test_docker_build.py -p no:cacheprovider

VIT_DEPLOY_BUILD_OPTIONS holds this machine's build.sh options (base image, pip's sources, storage driver).
The image is tagged localhost/vit-deploy-test:onnxruntime and removed afterwards; a base made with
--base-from-debootstrap stays in the store, so the next run skips debootstrap.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "localhost/vit-deploy-test"
IMAGE = f"{PREFIX}:onnxruntime"
IMAGE_USER = 10001


def _missing() -> list[str]:
    missing = []
    if os.environ.get("VIT_DEPLOY_BUILD_IMAGES") != "1":
        missing.append("VIT_DEPLOY_BUILD_IMAGES=1 is not set")
    if not shutil.which("buildah"):
        missing.append("buildah is not installed (apt-get install buildah)")
    return missing


pytestmark = [
    pytest.mark.docker_build,
    pytest.mark.skipif(bool(_missing()), reason="builds a container image for real (minutes, GBs of disk); "
                       + "; ".join(_missing())),
]


@pytest.fixture(scope="module")
def buildah() -> list[str]:
    """buildah with the global options (the storage driver) that VIT_DEPLOY_BUILD_OPTIONS gives build.sh."""
    options = shlex.split(os.environ.get("VIT_DEPLOY_BUILD_OPTIONS", ""))
    command = ["buildah"]
    if "--storage-driver" in options:
        command += ["--storage-driver", options[options.index("--storage-driver") + 1]]
    return command


@pytest.fixture(scope="module")
def image(buildah):
    options = shlex.split(os.environ.get("VIT_DEPLOY_BUILD_OPTIONS", ""))
    built = subprocess.run(["bash", str(ROOT / "docker" / "build.sh"), "--engine", "buildah", *options, "onnxruntime"],
                           env={**os.environ, "IMAGE_PREFIX": PREFIX}, capture_output=True, text=True, timeout=3600)
    try:
        assert built.returncode == 0, f"build.sh failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
        yield built
    finally:
        subprocess.run([*buildah, "rmi", IMAGE], capture_output=True, timeout=600)


def test_doctor_and_the_smoke_checks_pass(image):
    out = image.stdout
    assert "==> smoke test localhost/vit-deploy-test:onnxruntime" in out
    # doctor's table, then build.sh's check: label = installed version, pip check, not root.
    assert "onnxruntime  " in out and "ok: onnxruntime " in out and "(= the label)" in out
    assert "pip check clean" in out and f"running as uid {IMAGE_USER}" in out


def test_export_inside_the_image(image, buildah, tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    if os.geteuid() == 0:
        os.chown(artifacts, IMAGE_USER, IMAGE_USER)
    else:
        artifacts.chmod(0o777)
    container = subprocess.run([*buildah, "from", "--pull=never", "--quiet", IMAGE], capture_output=True, text=True,
                               check=True, timeout=600).stdout.strip()
    try:
        # As build.sh does: buildah 1.28 may mount its own volume for the image's VOLUME over the -v folder.
        subprocess.run([*buildah, "config", "--volume", "/artifacts-", container], check=True, timeout=600)
        export = subprocess.run([*buildah, "run", "-v", f"{artifacts}:/artifacts", container, "--",
                                 "python", "-m", "deploy", "export", "hvt_digits", "--target", "onnxruntime"],
                                capture_output=True, text=True, timeout=1200)
    finally:
        subprocess.run([*buildah, "rm", container], capture_output=True, timeout=600)
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    folder = artifacts / "hvt_digits" / "onnxruntime-fp32"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "ok" and manifest["parity"]["passed"], manifest["parity"]
    assert (folder / "model.onnx").stat().st_size > 0
    # Written by the image's user, not root: every file and folder the export made.
    owners = {p.relative_to(artifacts).as_posix(): p.stat().st_uid for p in artifacts.rglob("*")}
    assert owners and set(owners.values()) == {IMAGE_USER}, owners
