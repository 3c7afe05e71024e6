# Two commands on a fresh machine: `make repro` (the pipeline) and `make test` (the tests).
# Both create .venv when missing and install requirements.lock; a second run installs nothing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# `make test PYTEST_ARGS='-k guard'`; from the command line only (an exported PYTEST_ARGS is ignored)
PYTEST_ARGS :=

# Telemetry off for every tool, in this process and its children (dvc, mlflow, bentoml, GX): telemetry.env
include telemetry.env
export $(shell sed -n 's/^\([A-Z_]*\)=.*/\1/p' telemetry.env)
export PATH := $(BIN):$(PATH)

HOST ?= 127.0.0.1
PORT ?= 3000
UI_PORT ?= 5000
# `make repro PROFILE=scut DATA=<photo folder>`: a params profile (profiles/<name>.yaml) as a DVC experiment
PROFILE ?=
DATA ?=
# `make gpu-train [DATA=...] [SET='train.rating.epochs=1 ...'] [GPU_OUT=out/gpu]`: the GPU profile
SET ?=
GPU_OUT ?= out/gpu
# `make estimate PROFILE=scut DATA=... [SEEDS="0 1 2"]`: the profile under several seeds -> reports/estimate.json
SEEDS ?= 0 1 2
# the tracking URI lives in params.yaml alone
TRACKING_URI = $(shell $(BIN)/python -c 'from pipeline.core.config import load_params; from pipeline.tracking import tracking_uri; print(tracking_uri(load_params()))')

# `make serve RELEASE=real`: the published models in release/real/ instead of this clone's run
RELEASE ?=
SERVING = $(if $(RELEASE),release/$(RELEASE)/serving.json,models/serving.json)
ST_VENV := .venv-st
ST := $(ST_VENV)/bin/st
SCHEMATHESIS := 4.32.5
K8S_VENV := .venv-k8s
K8S := $(K8S_VENV)/bin/kubernetes-validate
KUBERNETES_VALIDATE := 1.37.0
tag = $(shell $(BIN)/python -c 'import json; print(json.load(open("$(SERVING)"))["$(1)"]["tag"])')

.PHONY: help install repro test lint compare ui serve release build docker-context container-test compose-test rollout k8s-image push pull tracking-server k8s-tools bench bench-train bench-ddp refit-check estimate gpu-train gpu-check hardening faces pictures st lock clean
help:  ## this list
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## /  make \1\t/' | expand -t 24

install: $(STAMP)  ## .venv with requirements.lock (every other target runs it first)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

repro: install  ## the DVC pipeline: synthetic data by default; PROFILE=scut DATA=<folder> for real photos
ifeq ($(PROFILE)$(DATA),)
	dvc repro
else
	python -m pipeline.cli.profile --profile '$(PROFILE)' --data '$(DATA)' $(foreach s,$(SET),--set '$(s)')
endif

estimate: install  ## PROFILE under SEEDS (own split + init each, refit off): mean +- sd -> reports/estimate.json
	python -m pipeline.cli.estimate --profile '$(or $(PROFILE),scut)' --data '$(or $(DATA),../shared/data/facescore)' \
	  --seeds $(SEEDS) $(foreach s,$(SET),--set '$(s)')

gpu-train: install  ## profiles/scut-gpu.yaml (one GPU; 10 min budget, not yet measured): its models as a release (BentoML archives, metrics) -> GPU_OUT
	python -m pipeline.cli.profile --profile scut-gpu --data '$(or $(DATA),../shared/data/facescore)' $(foreach s,$(SET),--set '$(s)')
	python -m pipeline.cli.release --out '$(GPU_OUT)'

gpu-check: install  ## on a lent GPU (<= 8 min): CUDA training of both nets, DDP over gloo+NCCL via torchrun, the GPU profile's epochs timed, bf16/TF32, export served on CPU -> reports/gpu-check.json; DRY=1 on the CPU
	python bench/gpu_check.py $(if $(DRY),--dry-run)

push: install  ## the DVC cache (data, models, BentoML archives) to the remote in .dvc/config (S3; keys from the env)
	dvc push

pull: install  ## a second machine: `dvc pull`, then the champions' archives into BENTOML_HOME; `dvc repro` reruns nothing
	dvc pull
	python -m pipeline.stages.package --import models/bento

tracking-server: install  ## S3 API + PostgreSQL + mlflow server on loopback (deploy/stack.py); prints the env to export
	python deploy/stack.py

k8s-tools: $(K8S)  ## kubernetes-validate in .venv-k8s (tests/deploy/test_deploy.py validates both overlays of deploy/k8s with it)

$(K8S):
	$(PYTHON) -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/pip install -q --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE)

compose-test: install  ## the image pushed to a loopback registry, 2 replicas by digest behind HAProxy, one stopped mid-load, 503s not retried
	bash deploy/compose-test.sh

OVERLAY ?= cpu
rollout: install  ## REGISTRY=host/team [OVERLAY=cpu|gpu]: the champions' image built, pushed, its digest pinned in deploy/k8s/OVERLAY (deploy/rollout.py)
	@test -n "$(REGISTRY)" || { echo "usage: make rollout REGISTRY=registry.example.com/team [OVERLAY=gpu]"; exit 1; }
	python deploy/rollout.py --registry $(REGISTRY) --overlay $(OVERLAY)

k8s-image: install  ## IMAGE=name@sha256:... [OVERLAY=cpu|gpu]: pin an image you pushed yourself in deploy/k8s/OVERLAY (tags refused)
	python deploy/rollout.py --set "$(IMAGE)" --overlay $(OVERLAY)

bench-ddp: install  ## training samples/s and wall time, 1 vs train.nproc=2 processes, same global batch (bench/ddp.py)
	python bench/ddp.py

st: $(ST)  ## schemathesis in .venv-st (tests/service/test_hardening.py uses it when present)

test: install  ## the test suite (what CI runs)
	pytest $(PYTEST_ARGS)

lint: install  ## ruff (pyflakes, bugbear, simplify, isort, pyupgrade) and mypy; config in pyproject.toml
	ruff check pipeline service bench tests docker deploy .ci
	mypy

compare: install  ## the DVC experiments side by side: changed params and metrics, metrics and plots vs HEAD
	dvc exp show --only-changed --md
	dvc metrics diff --md
	dvc plots diff --open=false -o reports/plots_diff && echo "plots: reports/plots_diff/index.html"

ui: install  ## MLflow UI on http://127.0.0.1:5000 against the project's backend; Ctrl-C stops it
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec mlflow ui --backend-store-uri '$(TRACKING_URI)' \
	  --host $(HOST) --port $(UI_PORT) --workers 1

serve: install  ## serve on $(HOST):$(PORT): this clone's champions (after `make repro`), or RELEASE=real (release/real)
	@test -f $(SERVING) || { echo "no $(SERVING): run 'make repro' first, or 'make serve RELEASE=real'"; exit 1; }
ifneq ($(RELEASE),)
	python -m pipeline.cli.release --out release/$(RELEASE) --verify
	python -m pipeline.stages.package --import release/$(RELEASE)
endif
	FACES_GENDER_MODEL=$(call tag,gender) FACES_RATING_MODEL=$(call tag,rating) \
	  exec bentoml serve service.service:Faces --host $(HOST) --port $(PORT)

release: install  ## this run's served models, reports and card -> release/$(NAME) (pipeline/cli/release.py)
	python -m pipeline.cli.release --out 'release/$(or $(NAME),$(error NAME=<folder> is required, e.g. NAME=real))'

build: install  ## a Bento (offline: bentofile.yaml has lock_packages: false)
	FACES_GENDER_MODEL=$(call tag,gender) FACES_RATING_MODEL=$(call tag,rating) bentoml build

docker-context: install  ## copy the packaged champions (models/bento/*.bentomodel) into docker/context/models
	@test -f $(SERVING) || { echo "no $(SERVING): run 'make repro' (or 'make pull') first"; exit 1; }
	rm -f docker/context/models/*.bentomodel && cp models/bento/*.bentomodel docker/context/models/

container-test: install  ## build the Dockerfile on a locally made base image, run it, POST a photo
	bash docker/container-test.sh

bench: install  ## serving: this tree vs 141ddb7 (before the speed work), same models and photo, interleaved, with the roofline and the models' share of it (bench/serve.py, ~4 min)
	python bench/serve.py

bench-train: install  ## training step: old fp32 NCHW vs the execution policy, default + profile nets, as a fraction of the roofline (bench/train.py, ~2 min)
	python bench/train.py

refit-check: install  ## after a profile run: the refit from the split model vs the split model on unseen test photos (refit on train + val; SCRATCH=1 adds a refit from scratch) -> reports/refit-check.json
	python bench/refit_check.py $(if $(SCRATCH),--scratch,)

pictures: install  ## the README's plots and demo-page screenshot (docs/*.png) from the last run (needs chromium)
	python docs/pictures.py

# after `make repro PROFILE=scut DATA=...`: the dev set is drawn from that run's test split only
faces: install  ## face step: SCUT framing, synthetic scenes (data/wild) recall / 422s / scores, detectors on MEBeauty val (~6 min)
	python bench/wild.py --data '$(or $(DATA),../shared/data/facescore)' --out data/wild --names data/split/test.txt
	python bench/faces.py --data '$(or $(DATA),../shared/data/facescore)' --framing --wild data/wild --models models
	python bench/detectors.py --mebeauty '$(or $(MEBEAUTY),../shared/data/mebeauty)' --wild data/wild

hardening: install $(ST)  ## fuzz, soak, overload, hang-ups, an attacker's corpus, slow clients, memory, schemathesis (~7 min)
	python bench/hardening.py --schemathesis $(ST)

# schemathesis lives in its own venv: it is a client of the HTTP API, and its pins (hypothesis,
# jsonschema, requests) must not move the project's requirements.lock
$(ST):
	@test -x $(ST_VENV)/bin/python || $(PYTHON) -m venv $(ST_VENV)
	$(ST_VENV)/bin/pip install -q --disable-pip-version-check schemathesis==$(SCHEMATHESIS)

lock:  ## re-resolve requirements.in into requirements.lock + docker/requirements-serve.txt, with hashes (.ci/lock.py)
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/pip install -q -r requirements.in
	/tmp/lock-venv/bin/pip freeze > /tmp/lock-pins.txt
	/tmp/lock-venv/bin/python .ci/lock.py --pins /tmp/lock-pins.txt --python /tmp/lock-venv/bin/python

clean:  ## remove generated state (keeps .venv)
	rm -rf data reports/gx mlflow.db mlartifacts .dvc/cache .dvc/tmp
