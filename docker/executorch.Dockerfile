# vit-deploy with ExecuTorch on CPU (the project's `executorch` extra): torch.export programs lowered to
# XNNPACK, written as .pte files and run by ExecuTorch's Python runtime. bench profile: --device cpu.
#
#   docker build -f docker/executorch.Dockerfile -t vit-deploy:executorch .
#   docker run --rm -v "$PWD/artifacts:/artifacts" vit-deploy:executorch export hvt_s --target executorch
#
# Base: python:3.11.16-slim-trixie, the Debian 13 build that python:3.11-slim pointed at in 2026-09.
# executorch 1.5.1 publishes manylinux x86_64 wheels for CPython 3.11 with the runtime and its XNNPACK
# delegate built in; it brings torchao (PT2E int8 quantization) and coremltools (its Core ML delegate
# builds .pte files here that only Apple's ExecuTorch builds run).
# torch is the CPU build from the PyTorch CPU index (export and the PyTorch reference run on CPU); it is
# installed before the project so that pip never pulls the multi-GB CUDA build from PyPI.

ARG PYTHON_IMAGE=python:3.11.16-slim-trixie

# ---- the wheelhouse: empty unless the build is given one ------------------------------------------------
# A folder of wheels for pip (mirrored and air-gapped builds, docker/README.md): pass it as a named build
# context, `--build-context wheelhouse=DIR --build-arg PIP_FIND_LINKS=/wheelhouse`, which replaces this
# empty stage. pip reads it through a bind mount, so none of it becomes a layer.
FROM scratch AS wheelhouse

# ---- stage 1: the project as a wheel (pure Python); the source tree stays out of the final image -------
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
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    --mount=type=secret,id=pip-conf \
    python -m pip install --no-cache-dir --root-user-action=ignore "setuptools==${SETUPTOOLS_VERSION}" \
 && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# ---- stage 2: runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

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
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG ONNX_VERSION=1.23.2
ARG ONNXSCRIPT_VERSION=0.7.2
ARG ONNXRUNTIME_VERSION=1.32.0
ARG EXECUTORCH_VERSION=1.5.1
ARG TORCHAO_VERSION=0.18.0

LABEL org.opencontainers.image.title="vit-deploy-executorch" \
      org.opencontainers.image.description="vit-deploy: export vision transformers with torch.export, lower them to ExecuTorch with XNNPACK (fp32, fp16, int8 via PT2E) and run, check and benchmark them on CPU" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.vit-deploy.runtime="executorch" \
      io.vit-deploy.runtime-version="${EXECUTORCH_VERSION}" \
      io.vit-deploy.bench-device="cpu"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONSAFEPATH=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The wheel is bind-mounted from the first stage, so it never becomes a layer of this image.
RUN --mount=type=bind,from=wheel,source=/dist,target=/tmp/dist \
    --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    --mount=type=secret,id=pip-conf \
    PIP_INDEX_URL="${TORCH_INDEX_URL:-${PIP_INDEX_URL}}" \
        python -m pip install --no-cache-dir "torch==${TORCH_VERSION}" \
 && python -m pip install --no-cache-dir "/tmp/dist/vit_deploy-${VERSION}-py3-none-any.whl[executorch]" \
        "torch==${TORCH_VERSION}" \
        "onnx==${ONNX_VERSION}" \
        "onnxscript==${ONNXSCRIPT_VERSION}" \
        "onnxruntime==${ONNXRUNTIME_VERSION}" \
        "executorch==${EXECUTORCH_VERSION}" \
        "torchao==${TORCHAO_VERSION}" \
 && python -m pip check \
 && python -c "from executorch.runtime import Runtime; import deploy.cli; \
assert 'XnnpackBackend' in Runtime.get().backend_registry.registered_backend_names"

# Outputs: the CLI's default --out is the relative path `artifacts`, so with the working directory at /
# every export and bench lands in the /artifacts volume without passing --out.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin vit \
 && install -d -o vit -g vit /artifacts
USER 10001
WORKDIR /
VOLUME ["/artifacts"]

ENTRYPOINT ["python", "-m", "deploy"]
CMD ["doctor"]
