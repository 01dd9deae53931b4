# vit-deploy with TensorRT on an NVIDIA data-centre / desktop GPU (x86_64). bench profile: --device cuda.
#
#   docker build -f docker/tensorrt.Dockerfile -t vit-deploy:tensorrt .
#   docker run --rm --gpus all -v "$PWD/artifacts:/artifacts" vit-deploy:tensorrt export hvt_s --target tensorrt --fp16
#
# Base: NVIDIA's TensorRT container, nvcr.io/nvidia/tensorrt:<yy.mm>-py3. 26.08-py3 ships TensorRT 11.2.1.2
# on Ubuntu 24.04 with Python 3.12 and CUDA 13 (the 26.x series needs a host driver of 580 or later).
# Earlier tags for reference: 25.06-py3 = TensorRT 10.11.0.33 / Python 3.12.3; 25.01-py3 = TensorRT 10.8.0.43 /
# CUDA 12.8. Bumping the tag means bumping TENSORRT_VERSION: the build checks that they agree.
#
# How the base's TensorRT is kept: the project's `tensorrt` extra asks for `tensorrt>=10.0` (and
# cuda-python). Installing `vit-deploy[tensorrt]` would let pip decide whether the base's TensorRT counts;
# where the base's Python bindings carry no pip metadata pip downloads a second TensorRT from PyPI, whose
# libraries then differ from the base's trtexec and plugins. So pip is never shown that requirement:
#   1. the wheel stage writes the core dependencies plus the extra *without* tensorrt to requirements.txt
#      (docker/requirements.py reads them from pyproject.toml, so nothing is listed twice);
#   2. this stage installs that file, then the project wheel with --no-deps;
#   3. the build fails unless `import tensorrt` is still the base's copy, at the pinned version.
# A venv with --system-site-packages keeps our packages apart from the base's Python (which Ubuntu 24.04
# marks externally managed) while still seeing the base's tensorrt module.
#
# torch is the CPU build: here it only exports ONNX and runs the PyTorch reference on CPU, and TensorRT
# builds its engines from the ONNX file. A CUDA torch would add several GB of nvidia-* wheels duplicating the
# base's CUDA, cuDNN and cuBLAS; pass --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 for one.

ARG PYTHON_IMAGE=python:3.11.16-slim-trixie
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:26.08-py3

# ---- the wheelhouse: empty unless the build is given one ------------------------------------------------
# A folder of wheels for pip (mirrored and air-gapped builds, docker/README.md): pass it as a named build
# context, `--build-context wheelhouse=DIR --build-arg PIP_FIND_LINKS=/wheelhouse`, which replaces this
# empty stage. pip reads it through a bind mount, so none of it becomes a layer.
FROM scratch AS wheelhouse

# ---- stage 1: the project as a wheel, plus the requirements of the tensorrt extra minus TensorRT --------
FROM ${PYTHON_IMAGE} AS wheel
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

# ---- stage 2: runtime on NVIDIA's TensorRT container -------------------------------------------------
FROM ${TENSORRT_IMAGE}

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
ARG TENSORRT_VERSION=11.2.1.2
ARG PIP_VERSION=26.3
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG ONNX_VERSION=1.23.2
ARG ONNXSCRIPT_VERSION=0.7.2
ARG ONNXRUNTIME_VERSION=1.32.0
ARG CUDA_PYTHON_VERSION=13.4.4

LABEL org.opencontainers.image.title="vit-deploy-tensorrt" \
      org.opencontainers.image.description="vit-deploy: export vision transformers to ONNX and build, check and benchmark TensorRT engines on NVIDIA GPUs (fp32, fp16, int8); TensorRT from NVIDIA's container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.vit-deploy.runtime="tensorrt" \
      io.vit-deploy.runtime-version="${TENSORRT_VERSION}" \
      io.vit-deploy.bench-device="cuda"

# VIT_DEPLOY_CACHE: TensorRT's engine and timing caches go to the volume, so they outlive `docker run --rm`.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIT_DEPLOY_CACHE=/artifacts/.cache

# The venv starts without pip; the base's pip (visible through --system-site-packages) installs a pinned
# pip into it, and every later `python -m pip` is the venv's.
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    --mount=type=secret,id=pip-conf \
    python3 -m venv --without-pip --system-site-packages /opt/venv \
 && python -m pip install --no-cache-dir "pip==${PIP_VERSION}"

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
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin vit \
 && install -d -o vit -g vit /artifacts
USER 10001
WORKDIR /
VOLUME ["/artifacts"]

# Replaces the base's /opt/nvidia/nvidia_entrypoint.sh (a banner, then exec); run with --gpus all.
ENTRYPOINT ["python", "-m", "deploy"]
CMD ["doctor"]
