# vit-deploy with TensorRT on NVIDIA Jetson (Orin, JetPack 6, arm64). bench profile: --device jetson.
#
#   docker build -f docker/jetson.Dockerfile -t vit-deploy:jetson .            # on the Jetson itself, or
#   docker buildx build --platform linux/arm64 -f docker/jetson.Dockerfile -t vit-deploy:jetson --load .
#   docker run --rm --runtime nvidia -v "$PWD/artifacts:/artifacts" vit-deploy:jetson export hvt_s --target tensorrt --fp16
#
# Base: nvcr.io/nvidia/l4t-jetpack:r36.4.0, JetPack 6.1/6.2 (L4T R36.4) for Jetson Orin: Ubuntu 22.04,
# Python 3.10, CUDA 12.6, cuDNN 9.3 and TensorRT 10.3.0.30, with the TensorRT Python bindings installed
# as a Debian package under /usr/lib/python3.10/dist-packages/tensorrt. Since JetPack 5 these libraries
# live inside the image rather than being mounted from the host; `--runtime nvidia` exposes the GPU.
# The host's JetPack must be 6.x (L4T R36) for these user-space libraries to match its driver.
#
# TensorRT is the base's and is never reinstalled: pip may have no record of the apt-installed bindings,
# and then installing `vit-deploy[tensorrt]` would download TensorRT from PyPI (a build for desktop GPUs, not
# for Jetson). As in tensorrt.Dockerfile, docker/requirements.py lists the core dependencies plus the
# `tensorrt` extra without tensorrt, the project wheel goes in with --no-deps, and the build fails unless
# `import tensorrt` is still the base's 10.3.
#
# Python 3.10 sets the pins below: onnxruntime 1.23.2 is the last release with CPython 3.10 aarch64 wheels.
# torch is the CPU build (ONNX export and the PyTorch reference run on CPU). For a CUDA torch on Jetson pass
# --build-arg TORCH_INDEX_URL=<a JetPack 6 wheel index, e.g. the Jetson AI Lab's jp6/cu126>.

ARG PYTHON_IMAGE=python:3.11.16-slim-trixie
ARG L4T_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0

# ---- the wheelhouse: empty unless the build is given one ------------------------------------------------
# A folder of wheels for pip (mirrored and air-gapped builds, docker/README.md): pass it as a named build
# context, `--build-context wheelhouse=DIR --build-arg PIP_FIND_LINKS=/wheelhouse`, which replaces this
# empty stage. pip reads it through a bind mount, so none of it becomes a layer.
FROM scratch AS wheelhouse

# ---- stage 1: the project as a wheel, plus the requirements of the tensorrt extra minus TensorRT --------
# The wheel is pure Python, so this stage runs on the build machine's own platform (no emulation).
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS wheel
ARG SETUPTOOLS_VERSION=84.2.1
# Where pip finds packages. Empty means pip's own default: PyPI, or what a pip.conf secret says (a value
# given here overrides the pip.conf). PIP_CERT and PIP_CONFIG_FILE name the secrets mounted below
# (/run/secrets/ca-bundle, /run/secrets/pip-conf), which never become a layer. Build arguments show in the
# image history: credentials go in the pip.conf secret, never in a URL here.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=""
ARG PIP_CERT=""
ARG PIP_CONFIG_FILE=""
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY deploy/ deploy/
COPY models/ models/
COPY runtimes/ runtimes/
COPY docker/requirements.py docker/requirements.py
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    --mount=type=secret,id=pip-conf \
    python -m pip install --no-cache-dir --root-user-action=ignore "setuptools==${SETUPTOOLS_VERSION}" \
 && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist . \
 && python docker/requirements.py --extra tensorrt --exclude tensorrt > /dist/requirements.txt

# ---- stage 2: runtime on L4T JetPack ---------------------------------------------------------------------
FROM ${L4T_IMAGE}

ARG VERSION=0.2.0
ARG SOURCE_URL=https://example.invalid/vit-deploy
# pip's sources, as in the wheel stage (empty: pip's default); the torch step uses TORCH_INDEX_URL in place
# of PIP_INDEX_URL unless it is empty.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=""
ARG PIP_CERT=""
ARG PIP_CONFIG_FILE=""
ARG TENSORRT_VERSION=10.3.0.30
ARG PIP_VERSION=26.3
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG ONNX_VERSION=1.23.2
ARG ONNXSCRIPT_VERSION=0.7.2
ARG ONNXRUNTIME_VERSION=1.23.2
ARG CUDA_PYTHON_VERSION=12.6.2.post1

LABEL org.opencontainers.image.title="vit-deploy-jetson" \
      org.opencontainers.image.description="vit-deploy for NVIDIA Jetson (JetPack 6): export vision transformers to ONNX and build, check and benchmark TensorRT engines with JetPack's TensorRT; run with --runtime nvidia" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.vit-deploy.runtime="tensorrt" \
      io.vit-deploy.runtime-version="${TENSORRT_VERSION}" \
      io.vit-deploy.bench-device="jetson"

# VIT_DEPLOY_CACHE: TensorRT's engine and timing caches go to the volume, so they outlive `docker run --rm`.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIT_DEPLOY_CACHE=/artifacts/.cache

# python3-pip only bootstraps the venv's own pinned pip (the venv starts without pip and sees the
# system's through --system-site-packages).
# hadolint ignore=DL3008
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    --mount=type=secret,id=pip-conf \
    apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv --without-pip --system-site-packages /opt/venv \
 && python -m pip install --no-cache-dir "pip==${PIP_VERSION}"
# Why DL3008 is ignored above: Ubuntu's archive keeps only the newest build of a package in jammy-updates,
# so an `apt-get install python3-pip=<version>` pin breaks the build at the next security update. The
# pinned base tag fixes the Ubuntu release, and this pip is only used to install the pinned one.

RUN --mount=type=bind,from=wheel,source=/dist,target=/tmp/dist \
    --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    --mount=type=secret,id=pip-conf \
    PIP_INDEX_URL="${TORCH_INDEX_URL:-${PIP_INDEX_URL}}" \
        python -m pip install --no-cache-dir "torch==${TORCH_VERSION}" \
 && python -m pip install --no-cache-dir -r /tmp/dist/requirements.txt \
        "torch==${TORCH_VERSION}" \
        "onnx==${ONNX_VERSION}" \
        "onnxscript==${ONNXSCRIPT_VERSION}" \
        "onnxruntime==${ONNXRUNTIME_VERSION}" \
        "cuda-python==${CUDA_PYTHON_VERSION}" \
 && python -m pip install --no-cache-dir --no-deps "/tmp/dist/vit_deploy-${VERSION}-py3-none-any.whl" \
 && python -c "import sys, tensorrt as trt, deploy.cli; want = '${TENSORRT_VERSION}'; \
ok = trt.__version__.split('.')[:2] == want.split('.')[:2] and not trt.__file__.startswith(sys.prefix); \
sys.exit(0 if ok else f'TensorRT {trt.__version__} at {trt.__file__}: expected the base image TensorRT {want}')"

# Outputs: the CLI's default --out is the relative path `artifacts`, so with the working directory at /
# every export and bench lands in the /artifacts volume without passing --out.
# On Jetson the GPU device nodes belong to the `video` group, so the user joins it (USER names the uid
# alone, so that Docker also applies its supplementary groups).
RUN useradd --create-home --uid 10001 --user-group --groups video --shell /usr/sbin/nologin vit \
 && install -d -o vit -g vit /artifacts
USER 10001
WORKDIR /
VOLUME ["/artifacts"]

ENTRYPOINT ["python", "-m", "deploy"]
CMD ["doctor"]
