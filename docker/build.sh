#!/usr/bin/env bash
# Build the vit-deploy images (docker/<name>.Dockerfile -> vit-deploy:<name>) and smoke-test each one.
#
#   docker/build.sh                      # every image this machine can build natively
#   docker/build.sh openvino tensorrt    # just these
#   docker/build.sh --gpu tensorrt       # smoke-test with the GPU attached (--gpus all / --runtime nvidia)
#   docker/build.sh --no-smoke           # build only
#   docker/build.sh --engine buildah --storage-driver vfs --base-from-debootstrap bookworm \
#       --ca-bundle /etc/ssl/certs/ca-certificates.crt --find-links /opt/wheels --torch-index-url '' onnxruntime
#
# Engine:
#   --engine docker|podman|buildah    default: docker if its daemon answers, else podman, else buildah
#   --storage-driver NAME             podman/buildah storage driver (vfs where overlay is unavailable)
# Base image (default python:3.11.16-slim-trixie, pulled unless already there):
#   --base IMAGE                      build on IMAGE instead: in the engine's store, or pullable
#   --base-from-debootstrap SUITE     make a local Python base from Debian SUITE (bookworm: Python 3.11);
#                                     needs root and debootstrap, and no container registry
#   --debian-mirror URL               debootstrap's mirror (default http://deb.debian.org/debian)
# Where pip finds packages (docker/README.md, "Offline and mirrored builds"):
#   --index-url URL                   pip's index (PIP_INDEX_URL; default PyPI)
#   --extra-index-url URL             another index (PIP_EXTRA_INDEX_URL; repeatable)
#   --find-links DIR|URL              a wheelhouse: a folder is mounted read-only, a URL passed on (repeatable)
#   --torch-index-url URL             torch's index (default the PyTorch CPU index; '' = pip's own sources)
#   --no-index                        pip uses only the wheelhouse
#   --ca-bundle FILE                  CA certificates for pip (a build secret: never in the image)
#   --pip-conf FILE                   a pip.conf for the build (a build secret: never in the image)
#   --build-arg NAME=VALUE            passed to every build (repeatable)
# Checks after the build:
#   --no-smoke                        none
#   --gpu                             smoke-test the GPU images with the GPU attached
#   --pipeline                        also export and bench hvt_digits in each image, writing to /artifacts
#
# Before building, the indexes are checked (curl) and every base image is looked up or pulled: a wrong
# option stops here with one line saying what is missing. The smoke test runs `doctor`, then fails unless
# doctor finds the image's runtime (its io.vit-deploy.runtime label: installed, and with --gpu able to run),
# the runtime-version label is the installed version, `pip check` passes and the user is not root.
# jetson is arm64: it is in the default set only on an arm64 host; named elsewhere, it is built with
# --platform linux/arm64, which needs QEMU binfmt emulation (docker run --privileged --rm tonistiigi/binfmt --install arm64).
set -euo pipefail

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
    echo "images: ${available[*]}"
}

die() {  # die MESSAGE: the one line a bad option gets
    echo "error: $*" >&2
    exit 2
}

note() {
    echo "note: $*" >&2
}

exec 3>&1  # progress from inside $(...) goes to the real stdout

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
pipeline=0
engine=""
storage_driver=""
base=""
debootstrap_suite=""
debian_mirror="http://deb.debian.org/debian"
index_url=""
extra_index_urls=()
find_links=()
torch_index_url=""
torch_index_given=0
no_index=0
ca_bundle=""
pip_conf=""
user_build_args=()
requested=()

need_value() {  # need_value OPTION "$@": the option's value, or a one-line error
    (($# >= 2)) || die "$1 needs a value (docker/build.sh --help)"
}

while (($#)); do
    case "$1" in
        --no-smoke) smoke=0 ;;
        --gpu) gpu=1 ;;
        --pipeline) pipeline=1 ;;
        --no-index) no_index=1 ;;
        --engine) need_value "$@"; engine="$2"; shift ;;
        --storage-driver) need_value "$@"; storage_driver="$2"; shift ;;
        --base) need_value "$@"; base="$2"; shift ;;
        --base-from-debootstrap) need_value "$@"; debootstrap_suite="$2"; shift ;;
        --debian-mirror) need_value "$@"; debian_mirror="$2"; shift ;;
        --index-url) need_value "$@"; index_url="$2"; shift ;;
        --extra-index-url) need_value "$@"; extra_index_urls+=("$2"); shift ;;
        --find-links) need_value "$@"; find_links+=("$2"); shift ;;
        --torch-index-url) need_value "$@"; torch_index_url="$2"; torch_index_given=1; shift ;;
        --ca-bundle) need_value "$@"; ca_bundle="$2"; shift ;;
        --pip-conf) need_value "$@"; pip_conf="$2"; shift ;;
        --build-arg) need_value "$@"; user_build_args+=(--build-arg "$2"); shift ;;
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

if [[ -n "$base" && -n "$debootstrap_suite" ]]; then
    die "--base and --base-from-debootstrap both name the base: give one"
fi

# ---- the engine ----------------------------------------------------------------------------------------

docker_answers() {
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if [[ -z "$engine" ]]; then
    if command -v docker >/dev/null && docker_answers; then
        engine=docker
    elif command -v podman >/dev/null; then
        engine=podman
    elif command -v buildah >/dev/null; then
        engine=buildah
    elif command -v docker >/dev/null; then
        die "docker is installed but its daemon does not answer, and neither podman nor buildah is installed: start the daemon, or install buildah (apt-get install buildah) and pass --engine buildah"
    else
        die "no container engine found: install docker, podman or buildah (apt-get install buildah), or pass --engine"
    fi
else
    case "$engine" in
        docker | podman | buildah) ;;
        *) die "unknown engine '$engine': pass --engine docker, podman or buildah" ;;
    esac
    command -v "$engine" >/dev/null || die "--engine $engine: $engine is not installed; install it, or pass another of docker, podman, buildah"
    if [[ "$engine" == docker ]] && ! docker_answers; then
        die "docker is installed but its daemon does not answer: start it (systemctl start docker), or build without a daemon: --engine buildah"
    fi
fi
engine_cmd=("$engine")
if [[ -n "$storage_driver" ]]; then
    [[ "$engine" != docker ]] || die "--storage-driver is for podman and buildah; docker's is set in its daemon (daemon.json)"
    engine_cmd+=(--storage-driver "$storage_driver")
fi
if ((gpu)) && [[ "$engine" == buildah ]]; then
    die "--gpu needs docker or podman: buildah cannot run an image with a GPU attached; build with buildah, then run with one of those"
fi

if ((${#requested[@]} == 0)); then
    for name in "${available[@]}"; do
        if [[ "$name" == jetson && "$host_arm64" == 0 ]]; then
            note "skipping jetson on this $(uname -m) host; name it to build it under arm64 emulation"
            continue
        fi
        requested+=("$name")
    done
fi
for name in "${requested[@]}"; do
    if [[ ! -f "docker/$name.Dockerfile" ]]; then
        die "no docker/$name.Dockerfile; images: ${available[*]}"
    fi
done
workdir="$(mktemp -d "${TMPDIR:-/var/tmp}/vit-deploy-build.XXXXXX")"
containers=()  # buildah working containers to remove on exit
cleanup() {
    local ctr
    for ctr in ${containers[@]+"${containers[@]}"}; do
        "${engine_cmd[@]}" rm "$ctr" >/dev/null 2>&1 || true
    done
    rm -rf "$workdir"
}
trap cleanup EXIT
logs="${TMPDIR:-/var/tmp}/vit-deploy-build-logs"  # what the one-line errors point to; kept after exit
mkdir -p "$logs"

image_exists() {  # image_exists REF
    case "$engine" in
        docker) docker image inspect "$1" >/dev/null 2>&1 ;;
        podman) "${engine_cmd[@]}" image exists "$1" >/dev/null 2>&1 ;;
        buildah) "${engine_cmd[@]}" inspect --type image "$1" >/dev/null 2>&1 ;;
    esac
}

label() {  # label IMAGE KEY
    case "$engine" in
        buildah) "${engine_cmd[@]}" inspect --type image --format "{{ index .OCIv1.Config.Labels \"$2\" }}" "$1" ;;
        *) "${engine_cmd[@]}" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" ;;
    esac
}

image_user() {  # image_user IMAGE: the USER it runs as
    case "$engine" in
        buildah) "${engine_cmd[@]}" inspect --type image --format '{{ .OCIv1.Config.User }}' "$1" ;;
        *) "${engine_cmd[@]}" image inspect --format '{{ .Config.User }}' "$1" ;;
    esac
}

image_size() {  # image_size IMAGE: as the engine reports it
    local bytes
    case "$engine" in
        buildah) "${engine_cmd[@]}" images --noheading --format '{{ .Size }}' "$1" | head -n 1 ;;
        *)
            bytes="$("${engine_cmd[@]}" image inspect --format '{{ .Size }}' "$1")"
            if [[ "$bytes" =~ ^[0-9]+$ ]]; then echo "$((bytes / 1000000)) MB"; else echo "${bytes:-?}"; fi
            ;;
    esac
}

qualified() {  # qualified REF: podman and buildah need a registry in the name, docker assumes docker.io
    local first="${1%%/*}"
    if [[ "$1" != */* ]]; then
        echo "docker.io/library/$1"
    elif [[ "$first" == *.* || "$first" == *:* || "$first" == localhost ]]; then
        echo "$1"
    else
        echo "docker.io/$1"
    fi
}

# ---- the indexes pip will use ----------------------------------------------------------------------------

check_reachable() {  # check_reachable URL WHAT HOW-TO-FIX
    local url="$1" what="$2" how="$3" code reason
    case "$url" in
        file:* | /*) die "$what $url is a path on this machine, which the build cannot see: $how" ;;
        http://* | https://*) ;;
        *) die "$what '$url' is not an http(s) URL: $how" ;;
    esac
    if ! command -v curl >/dev/null; then
        note "curl is not installed, so $what $url is not checked before the build"
        return 0
    fi
    local curl_args=(--silent --show-error --head --output /dev/null --max-time 30 --write-out '%{http_code}')
    [[ -z "$ca_bundle" ]] || curl_args+=(--cacert "$ca_bundle")
    if ! code="$(curl "${curl_args[@]}" "$url" 2>"$workdir/curl.err")"; then
        reason="$(head -n 1 "$workdir/curl.err")"
        case "$reason" in
            *certificate* | *SSL*) how="give the CA that signs it with --ca-bundle FILE" ;;
        esac
        die "cannot reach $what $url (${reason:-no answer}): $how"
    fi
    case "$code" in
        401 | 403 | 407) die "$what $url refuses access (HTTP $code): put its credentials in a pip.conf and pass --pip-conf FILE" ;;
    esac
}

build_args=()
secrets=()
contexts=()
for file_option in "--ca-bundle:$ca_bundle" "--pip-conf:$pip_conf"; do
    option="${file_option%%:*}" file="${file_option#*:}"
    [[ -z "$file" || -r "$file" ]] || die "$option $file: no such readable file"
done
[[ -z "$ca_bundle" ]] || { secrets+=(--secret "id=ca-bundle,src=$(realpath "$ca_bundle")"); build_args+=(--build-arg PIP_CERT=/run/secrets/ca-bundle); }
[[ -z "$pip_conf" ]] || { secrets+=(--secret "id=pip-conf,src=$(realpath "$pip_conf")"); build_args+=(--build-arg PIP_CONFIG_FILE=/run/secrets/pip-conf); }

wheelhouse=""
find_link_urls=()
for link in ${find_links[@]+"${find_links[@]}"}; do
    if [[ -d "$link" ]]; then
        [[ -z "$wheelhouse" ]] || die "--find-links names two folders ($wheelhouse, $link): put the wheels in one"
        wheelhouse="$(realpath "$link")"
        find_link_urls+=(/wheelhouse)
    else
        check_reachable "$link" "the wheelhouse" "give an existing folder or a reachable URL to --find-links"
        find_link_urls+=("$link")
    fi
done
if [[ -n "$wheelhouse" ]]; then
    contexts+=(--build-context "wheelhouse=$wheelhouse")
fi
((${#find_link_urls[@]} == 0)) || build_args+=(--build-arg "PIP_FIND_LINKS=${find_link_urls[*]}")
if ((no_index)); then
    ((${#find_link_urls[@]})) || die "--no-index leaves pip nothing to install from: give a wheelhouse with --find-links DIR|URL"
    build_args+=(--build-arg PIP_NO_INDEX=1)
else
    if [[ -n "$index_url" ]]; then
        check_reachable "$index_url" "pip's index" "give a reachable mirror with --index-url URL, or a wheelhouse with --find-links DIR --no-index"
        build_args+=(--build-arg "PIP_INDEX_URL=$index_url")
    elif [[ -z "$pip_conf" ]]; then
        check_reachable "https://pypi.org/simple/" "pip's index" "give a mirror with --index-url URL (and --ca-bundle FILE behind a TLS-intercepting proxy), or a wheelhouse with --find-links DIR --no-index"
    fi
    for url in ${extra_index_urls[@]+"${extra_index_urls[@]}"}; do
        check_reachable "$url" "the extra index" "give a reachable one with --extra-index-url URL, or leave it out"
    done
    ((${#extra_index_urls[@]} == 0)) || build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra_index_urls[*]}")
    if ((torch_index_given == 0)); then
        check_reachable "https://download.pytorch.org/whl/cpu/" "the torch index" "give a mirror of it with --torch-index-url URL, or --torch-index-url '' to take torch from pip's index or --find-links"
    elif [[ -n "$torch_index_url" ]]; then
        check_reachable "$torch_index_url" "the torch index" "give a reachable one with --torch-index-url URL, or --torch-index-url '' to take torch from pip's index or --find-links"
    fi
fi
((torch_index_given == 0)) || build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index_url")

# ---- the base images -----------------------------------------------------------------------------------

base_pip_version=26.3  # the pip the NVIDIA images pin (PIP_VERSION) and the project develops with

make_debootstrap_base() {  # make_debootstrap_base SUITE REF: Debian SUITE with a Python venv, as image REF
    local suite="$1" ref="$2" root="$workdir/rootfs" log="$logs/debootstrap-$1.log"
    local scripts="${DEBOOTSTRAP_DIR:-/usr/share/debootstrap}/scripts"
    command -v debootstrap >/dev/null || die "--base-from-debootstrap needs debootstrap: apt-get install debootstrap, or pass --base IMAGE"
    [[ -e "$scripts/$suite" ]] || die "debootstrap knows no suite '$suite' (see $scripts): give a Debian suite such as bookworm (Python 3.11)"
    [[ "$(id -u)" == 0 ]] || die "--base-from-debootstrap runs debootstrap and chroot, which need root: run it as root, or pass --base IMAGE"
    echo "==> making the base image $ref: debootstrap $suite from $debian_mirror (log: $log)"
    # minbase has no python and useradd may be missing from other variants, so both are asked for here.
    debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
        "$suite" "$root" "$debian_mirror" >"$log" 2>&1 \
        || die "debootstrap $suite from $debian_mirror failed (log: $log): give a reachable Debian mirror with --debian-mirror URL"
    # Debian's python3 has no `python` command and refuses pip installs (PEP 668). A venv first on PATH
    # gives the Dockerfiles what python:*-slim gives them: `python` and a pip that installs into it.
    local env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1
               PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore)
    mkdir -p "$root/tmp/vit-deploy-build"
    [[ -z "$index_url" ]] || env+=("PIP_INDEX_URL=$index_url")
    ((${#extra_index_urls[@]} == 0)) || env+=("PIP_EXTRA_INDEX_URL=${extra_index_urls[*]}")
    ((no_index == 0)) || env+=(PIP_NO_INDEX=1)
    if [[ -n "$ca_bundle" ]]; then
        cp "$ca_bundle" "$root/tmp/vit-deploy-build/ca-bundle"
        env+=(PIP_CERT=/tmp/vit-deploy-build/ca-bundle)
    fi
    if [[ -n "$pip_conf" ]]; then
        cp "$pip_conf" "$root/tmp/vit-deploy-build/pip.conf"
        env+=(PIP_CONFIG_FILE=/tmp/vit-deploy-build/pip.conf)
    fi
    local links=("${find_link_urls[@]/#\/wheelhouse/\/tmp\/vit-deploy-build}")
    if [[ -n "$wheelhouse" ]]; then
        cp "$wheelhouse"/pip-*.whl "$root/tmp/vit-deploy-build/" 2>/dev/null || true
    fi
    ((${#links[@]} == 0)) || env+=("PIP_FIND_LINKS=${links[*]}")
    { env -i "${env[@]}" chroot "$root" /usr/bin/python3 -m venv /opt/python \
        && env -i "${env[@]}" chroot "$root" /opt/python/bin/python -m pip install "pip==$base_pip_version"; } >>"$log" 2>&1 \
        || die "cannot make the Python venv in the $suite base (log: $log): pip $base_pip_version must come from the index or --find-links"
    # Nothing of this machine stays in the base: the pip settings, apt's caches, resolv.conf.
    rm -rf "$root/tmp/vit-deploy-build" "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    : >"$root/etc/resolv.conf"
    local path=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    local description="Debian $suite (debootstrap minbase) with a Python venv at /opt/python, made by docker/build.sh"
    tar --numeric-owner -C "$root" -cf "$workdir/rootfs.tar" .
    rm -rf "$root"
    case "$engine" in
        buildah)
            local ctr
            ctr="$("${engine_cmd[@]}" from scratch)"
            containers+=("$ctr")
            "${engine_cmd[@]}" add --quiet "$ctr" "$workdir/rootfs.tar" / >/dev/null
            "${engine_cmd[@]}" config --env "PATH=$path" --env LANG=C.UTF-8 --cmd python \
                --label "org.opencontainers.image.description=$description" "$ctr"
            "${engine_cmd[@]}" commit --quiet --rm "$ctr" "$ref" >/dev/null
            ;;
        *)
            "${engine_cmd[@]}" import --change "ENV PATH=$path" --change "ENV LANG=C.UTF-8" --change 'CMD ["python"]' \
                --change "LABEL org.opencontainers.image.description=\"$description\"" "$workdir/rootfs.tar" "$ref" >/dev/null
            ;;
    esac
    rm -f "$workdir/rootfs.tar"
}

ensure_base() {  # ensure_base REF PLATFORM FIX: echo the name REF is found under, pulling it if needed
    local ref="$1" platform="$2" fix="$3" log
    if image_exists "$ref"; then echo "$ref"; return; fi
    if [[ "$engine" != docker ]] && image_exists "$(qualified "$ref")"; then qualified "$ref"; return; fi
    [[ "$engine" == docker ]] || ref="$(qualified "$ref")"
    log="$logs/pull-${ref//[^A-Za-z0-9._-]/_}.log"
    echo "==> pulling the base image $ref" >&3
    if "${engine_cmd[@]}" pull ${platform:+--platform "$platform"} "$ref" >"$log" 2>&1; then
        echo "$ref"
        return
    fi
    die "the base image $ref is not in $engine's store and cannot be pulled (log: $log): $fix"
}

python_base_fix="load it into $engine's store, pass another with --base IMAGE, or make one without a registry with --base-from-debootstrap bookworm"
if [[ -n "$debootstrap_suite" ]]; then
    base="$prefix-python:$debootstrap_suite"
    [[ "$engine" == docker || "$base" == */* ]] || base="localhost/$base"
    if image_exists "$base"; then
        note "using the base image $base made earlier (remove it to make it again: $engine rmi $base)"
    else
        started=$SECONDS
        make_debootstrap_base "$debootstrap_suite" "$base"
        echo "==> made the base image $base in $((SECONDS - started))s, $(image_size "$base")"
    fi
    python_base_fix="make it again with --base-from-debootstrap"
fi

# Every base a requested Dockerfile names (its global *_IMAGE arguments), found or pulled before any build.
declare -A base_args=()  # "name ARG" -> the reference to build with
for name in "${requested[@]}"; do
    platform=""
    [[ "$name" != jetson || "$host_arm64" == 1 ]] || platform=linux/arm64
    while read -r arg ref; do
        fix="pull it where NVIDIA's registry (nvcr.io) is reachable and load it here ($engine load), or leave $name out"
        if [[ "$arg" == PYTHON_IMAGE ]]; then
            ref="${base:-$ref}"
            fix="$python_base_fix"
            # The Python base is only the wheel stage's in the NVIDIA images; it runs on the build machine.
            [[ "$name" != jetson ]] || platform=""
        fi
        for given in ${user_build_args[@]+"${user_build_args[@]}"}; do
            [[ "$given" != "$arg="* ]] || ref="${given#*=}"
        done
        base_args["$name $arg"]="$(ensure_base "$ref" "$platform" "$fix")"
    done < <(sed -n 's/^ARG \([A-Z0-9_]*_IMAGE\)=\(.*\)$/\1 \2/p' "docker/$name.Dockerfile")
done

# ---- build ---------------------------------------------------------------------------------------------

if source_url="$(git remote get-url origin 2>/dev/null)"; then
    build_args+=(--build-arg "SOURCE_URL=$source_url")
fi
pull=()
[[ "$engine" == docker ]] || pull=(--pull=never)  # every base is in the store by now

declare -A build_seconds=()
for name in "${requested[@]}"; do
    image="$prefix:$name"
    platform=()
    if [[ "$name" == jetson && "$host_arm64" == 0 ]]; then
        platform=(--platform linux/arm64)
    fi
    bases=()
    for key in "${!base_args[@]}"; do
        [[ "$key" != "$name "* ]] || bases+=(--build-arg "${key#* }=${base_args[$key]}")
    done
    echo "==> building $image from docker/$name.Dockerfile with $engine"
    started=$SECONDS
    "${engine_cmd[@]}" build ${platform[@]+"${platform[@]}"} ${pull[@]+"${pull[@]}"} \
        ${bases[@]+"${bases[@]}"} ${build_args[@]+"${build_args[@]}"} ${secrets[@]+"${secrets[@]}"} \
        ${contexts[@]+"${contexts[@]}"} ${user_build_args[@]+"${user_build_args[@]}"} \
        -f "docker/$name.Dockerfile" -t "$image" .
    build_seconds[$name]=$((SECONDS - started))
done

# ---- smoke test and pipeline -----------------------------------------------------------------------------

smoke_py="$(cat docker/smoke.py)"
container=""  # buildah: the working container of the image being checked

in_image() {  # in_image IMAGE ARTIFACTS-DIR|"" ENTRYPOINT-ARGS...: run the image's entry point, or python
    local image="$1" artifacts="$2" volume=()
    shift 2
    [[ -z "$artifacts" ]] || volume=(-v "$artifacts:/artifacts")
    if [[ "$engine" == buildah ]]; then
        if [[ -z "$container" ]]; then
            container="$("${engine_cmd[@]}" from --pull=never --quiet "$image")"
            containers+=("$container")
            # buildah 1.28 also mounts a volume of its own for the image's VOLUME /artifacts, and which of the two
            # ends up on /artifacts varies from run to run: without the image's, the host folder is what it sees.
            "${engine_cmd[@]}" config --volume /artifacts- "$container"
        fi
        # buildah runs a command, not the entry point: this is the images' ENTRYPOINT (tests/test_docker.py).
        if [[ "$1" == --python ]]; then
            shift
            "${engine_cmd[@]}" run ${volume[@]+"${volume[@]}"} "$container" -- python "$@"
        else
            "${engine_cmd[@]}" run ${volume[@]+"${volume[@]}"} "$container" -- python -m deploy "$@"
        fi
    elif [[ "$1" == --python ]]; then
        shift
        "${engine_cmd[@]}" run "${run_flags[@]}" ${volume[@]+"${volume[@]}"} --entrypoint python "$image" "$@"
    else
        "${engine_cmd[@]}" run "${run_flags[@]}" ${volume[@]+"${volume[@]}"} "$image" "$@"
    fi
}

check_host_folder() {  # check_host_folder DIR UID: what the pipeline wrote reached the host, owned by the image's user
    local folder="$1" uid="$2" written foreign="" owners=""
    written="$(find "$folder" -mindepth 1 | wc -l)"
    # Owners only as root: a rootless engine maps the image's uid to one of the caller's subordinate uids.
    if [[ "$(id -u)" == 0 ]]; then
        foreign="$(find "$folder" ! -uid "$uid" | head -n 3)"
        owners=", all owned by uid $uid"
    fi
    if [[ "$written" == 0 || -n "$foreign" ]]; then
        echo "pipeline failed: the host folder $folder holds $written path(s)${foreign:+, some not owned by uid $uid: $foreign}" >&2
        exit 1
    fi
    # Counted as smoke.py counts inside: the folder itself and every path under it.
    echo "ok: on the host, $((written + 1)) paths under $folder$owners"
}

done_with_image() {
    if [[ -n "$container" ]]; then
        "${engine_cmd[@]}" rm "$container" >/dev/null
        local left=() ctr
        for ctr in "${containers[@]}"; do [[ "$ctr" == "$container" ]] || left+=("$ctr"); done
        containers=(${left[@]+"${left[@]}"})
        container=""
    fi
}

if ((smoke)); then
    for name in "${requested[@]}"; do
        image="$prefix:$name"
        runtime="$(label "$image" io.vit-deploy.runtime)"
        device="$(label "$image" io.vit-deploy.bench-device)"
        version="$(label "$image" io.vit-deploy.runtime-version)"
        user="$(image_user "$image")"
        case "${user%%:*}" in
            "" | 0 | root) echo "smoke test failed: $image runs as '${user:-root}', not as its own user" >&2; exit 1 ;;
        esac
        run_flags=(--rm)
        need_run=0
        if ((gpu)); then
            case "$device" in
                cuda) run_flags+=(--gpus all); need_run=1 ;;
                jetson) run_flags+=(--runtime nvidia); need_run=1 ;;
            esac
        fi
        echo "==> smoke test $image (runtime $runtime $version, bench --device $device, user $user): doctor"
        in_image "$image" "" doctor
        in_image "$image" "" --python -c "$smoke_py" check "$runtime" "$need_run" "$version"
        if ((pipeline)); then
            if [[ "$device" != cpu && "$need_run" == 0 ]]; then
                note "no pipeline run for $image: its runtime needs a GPU (pass --gpu)"
            else
                artifacts="$workdir/artifacts-$name"
                mkdir -p "$artifacts"
                # The image's user (uid 10001) must be able to write the host folder, as a user's would.
                if [[ "$(id -u)" == 0 ]]; then chown "${user%%:*}" "$artifacts"; else chmod 0777 "$artifacts"; fi
                echo "==> pipeline in $image: export and bench hvt_digits, written to /artifacts"
                in_image "$image" "$artifacts" --python -c "$smoke_py" pipeline "$runtime"
                check_host_folder "$artifacts" "${user%%:*}"
            fi
        fi
        done_with_image
    done
fi

echo "==> done with $engine: ${requested[*]}"
for name in "${requested[@]}"; do
    printf '    %-28s built in %4ss, %s\n' "$prefix:$name" "${build_seconds[$name]}" "$(image_size "$prefix:$name")"
done
