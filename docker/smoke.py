"""The checks docker/build.sh runs inside a built image, as `python -c "$(cat docker/smoke.py)" COMMAND ...`.

    check RUNTIME NEED_RUN LABEL_VERSION
        doctor finds RUNTIME installed (and able to run when NEED_RUN is 1), the image's runtime-version
        label is the version installed, `pip check` passes, and this process is not root.
    pipeline RUNTIME
        export hvt_digits for RUNTIME (and again in int8 where RUNTIME has it), bench it on the shipped
        digits test set with 10 timed runs, and check that everything written under /artifacts belongs to
        this (non-root) user.

It runs in the image's Python with what the image installed: the standard library and vit-deploy. It is
not part of the package (the image's build context leaves docker/ out), so build.sh passes its text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ARTIFACTS = Path("/artifacts")
MODEL = "hvt_digits"
# The pip distribution of each runtime doctor names; TensorRT comes with NVIDIA's base images, which may
# install it without pip metadata, and then doctor's version (the module's) is the one compared.
DISTRIBUTION = {"onnxruntime": "onnxruntime", "openvino": "openvino", "coreml": "coremltools",
                "executorch": "executorch", "tensorrt": "tensorrt"}


def fail(message: str) -> None:
    sys.exit(f"smoke test failed: {message}")


def doctor_row(runtime: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "deploy", "doctor", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"doctor --json exited {out.returncode}: {out.stderr.strip().splitlines()[-1:]}")
    row = next((r for r in json.loads(out.stdout) if r["runtime"] == runtime), None)
    if row is None:
        fail(f"doctor does not know the runtime {runtime}")
    return row


def installed_version(runtime: str, row: dict) -> str:
    try:
        return metadata.version(DISTRIBUTION.get(runtime, runtime))
    except metadata.PackageNotFoundError:
        return str(row["version"])


def check(runtime: str, need_run: bool, label_version: str) -> None:
    ids = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "egid": os.getegid()}
    if 0 in ids.values():
        fail(f"the image runs as root ({ids})")
    row = doctor_row(runtime)
    wanted = "able to run" if need_run else "installed"
    if not (row["can_run"] if need_run else row["version"]):
        fail(f"doctor does not report {runtime} as {wanted}: {row['reason']}")
    installed = installed_version(runtime, row)
    if installed != label_version:
        fail(f"the io.vit-deploy.runtime-version label says {label_version}, {runtime} {installed} is installed")
    pip = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if pip.returncode != 0:
        fail(f"pip check: {(pip.stdout + pip.stderr).strip()}")
    print(f"ok: {runtime} {installed} (= the label), can_build={row['can_build']}, can_run={row['can_run']}, "
          f"pip check clean, running as uid {ids['uid']} gid {ids['gid']}")


def deploy(*args: str) -> None:
    print("==> python -m deploy " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "deploy", *args])
    if done.returncode != 0:
        fail(f"python -m deploy {' '.join(args)} exited {done.returncode}")


def pipeline(runtime: str) -> None:
    row = doctor_row(runtime)
    deploy("export", MODEL, "--target", runtime)
    if "int8" in row["precisions"]:
        deploy("export", MODEL, "--target", runtime, "--int8")
    results = f"artifacts/bench-{runtime}.json"  # the working directory is /, so this is in the volume
    if row["can_run"]:
        deploy("bench", MODEL, "--dataset", "digits", "--runs", "10", "--target", runtime, "--json", results)
    else:
        print(f"note: {runtime} cannot run here ({row['reason']}): the bench runs the default targets")
        deploy("bench", MODEL, "--dataset", "digits", "--runs", "10", "--json", results)
    cells = json.loads(Path("/", results).read_text(encoding="utf-8"))["results"]
    not_ok = [f"{c['target']} {c['precision']}: {c['status']}" for c in cells if c["status"] != "ok"]
    if not cells or not_ok:
        fail(f"bench cells not ok: {not_ok or 'none ran'}")
    uid = os.getuid()
    written = [ARTIFACTS, *ARTIFACTS.rglob("*")]
    others = [str(p) for p in written if p.lstat().st_uid != uid]
    if others:
        fail(f"{len(others)} paths under {ARTIFACTS} do not belong to uid {uid}: {others[:5]}")
    engines = sorted(p.parent.name for p in ARTIFACTS.glob(f"{MODEL}/*/manifest.json"))
    print(f"ok: {MODEL} exported ({', '.join(engines)}), {len(cells)} bench cell(s) ok, "
          f"{len(written)} paths under {ARTIFACTS}, all owned by uid {uid}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["check"] and len(argv) == 4:
        check(argv[1], argv[2] == "1", argv[3])
    elif argv[:1] == ["pipeline"] and len(argv) == 2:
        pipeline(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
