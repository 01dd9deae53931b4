#!/usr/bin/env bash
# Build the vit-deploy images (docker/<name>.Dockerfile -> vit-deploy:<name>) and smoke-test each one.
#
#   docker/build.sh                      # every image this machine can build natively
#   docker/build.sh openvino tensorrt    # just these
#   docker/build.sh --gpu tensorrt       # smoke-test with the GPU attached (--gpus all / --runtime nvidia)
#   docker/build.sh --no-smoke           # build only
#
# The smoke test runs `doctor` in the image, then fails unless doctor finds the image's runtime (its
# io.vit-deploy.runtime label): with --gpu, able to run; without, at least installed (the GPU images then
# start without a GPU, and doctor reports TensorRT's version but no device).
# jetson is arm64: it is in the default set only on an arm64 host; named elsewhere, it is built with
# --platform linux/arm64, which needs QEMU binfmt emulation (docker run --privileged --rm tonistiigi/binfmt --install arm64).
set -euo pipefail

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$0"
    echo "images: ${available[*]}"
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

available=()
for dockerfile in docker/*.Dockerfile; do
    name="${dockerfile#docker/}"
    available+=("${name%.Dockerfile}")
done

prefix="${IMAGE_PREFIX:-vit-deploy}"
smoke=1
gpu=0
requested=()
while (($#)); do
    case "$1" in
        --no-smoke) smoke=0 ;;
        --gpu) gpu=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) requested+=("$1") ;;
    esac
    shift
done

case "$(uname -m)" in
    aarch64 | arm64) host_arm64=1 ;;
    *) host_arm64=0 ;;
esac

if ((${#requested[@]} == 0)); then
    for name in "${available[@]}"; do
        if [[ "$name" == jetson && "$host_arm64" == 0 ]]; then
            echo "note: skipping jetson on this $(uname -m) host; name it to build it under arm64 emulation" >&2
            continue
        fi
        requested+=("$name")
    done
fi
for name in "${requested[@]}"; do
    if [[ ! -f "docker/$name.Dockerfile" ]]; then
        echo "error: no docker/$name.Dockerfile; images: ${available[*]}" >&2
        exit 2
    fi
done

build_args=()
if source_url="$(git remote get-url origin 2>/dev/null)"; then
    build_args+=(--build-arg "SOURCE_URL=$source_url")
fi

label() {  # label IMAGE KEY
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1"
}

for name in "${requested[@]}"; do
    image="$prefix:$name"
    platform=()
    if [[ "$name" == jetson && "$host_arm64" == 0 ]]; then
        platform=(--platform linux/arm64)
    fi
    echo "==> building $image from docker/$name.Dockerfile"
    docker build ${platform[@]+"${platform[@]}"} ${build_args[@]+"${build_args[@]}"} -f "docker/$name.Dockerfile" -t "$image" .
done

if ((smoke == 0)); then
    exit 0
fi

for name in "${requested[@]}"; do
    image="$prefix:$name"
    runtime="$(label "$image" io.vit-deploy.runtime)"
    device="$(label "$image" io.vit-deploy.bench-device)"
    run_flags=(--rm)
    need_run=0
    if ((gpu)); then
        case "$device" in
            cuda) run_flags+=(--gpus all); need_run=1 ;;
            jetson) run_flags+=(--runtime nvidia); need_run=1 ;;
        esac
    fi
    echo "==> smoke test $image (runtime $runtime, bench --device $device): doctor"
    docker run "${run_flags[@]}" "$image" doctor
    # With the GPU attached, doctor must say the runtime can run; without it, that its package is
    # there (doctor reports its version even when it finds no device).
    docker run "${run_flags[@]}" --entrypoint python "$image" -c '
import json, subprocess, sys
runtime, need_run = sys.argv[1], sys.argv[2] == "1"
rows = json.loads(subprocess.check_output([sys.executable, "-m", "deploy", "doctor", "--json"]))
row = next((r for r in rows if r["runtime"] == runtime), None)
wanted = "able to run" if need_run else "installed"
if row is None or not (row["can_run"] if need_run else row["version"]):
    sys.exit(f"smoke test failed: doctor does not report {runtime} as {wanted}: {row}")
version, can_build, can_run = row["version"], row["can_build"], row["can_run"]
print(f"ok: {runtime} {version}, can_build={can_build}, can_run={can_run}")
' "$runtime" "$need_run"
done
echo "==> done: ${requested[*]}"
