#!/usr/bin/env bash
# Builds the real Dockerfile on a locally made base image, runs it, waits for /readyz, POSTs photos.
# No registry is reachable here, so the base is Debian bookworm made with debootstrap + docker import,
# and the CPU torch wheel that pip already finds on this machine stands in for the CUDA one.
# Starts dockerd (docker/engine.sh) when none runs, and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=faces-base:bookworm
IMAGE=faces-serve:test
WORK=${CONTAINER_TEST_DIR:-/tmp/faces-container-test}
PY=.venv/bin/python
mkdir -p "$WORK"

source docker/engine.sh
need debootstrap debootstrap
cleanup() {
  docker rm -f faces-serve-test >/dev/null 2>&1 || true
  engine_stop
}
trap cleanup EXIT
engine_start "$WORK"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "making base image $BASE with debootstrap (about a minute)"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log"
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"  # pip needs the host's CAs
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE" >/dev/null
fi

test -f models/serving.json || { echo "no models/serving.json: run 'make repro' first"; exit 1; }
rm -f docker/context/models/*.bentomodel && cp models/bento/*.bentomodel docker/context/models/
wheels=$(pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'/\1/p;T;q")
find docker/context/wheels -name 'torch-*.whl' -delete
cp "${wheels:-/opt/wheels}"/torch-2.13.0*cp311*.whl docker/context/wheels/

echo "docker build (base $BASE, CPU torch wheel)"
docker build --network host --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; exit 1; }
find docker/context/wheels -name 'torch-*.whl' -delete

port=$(free_port)
docker run -d --name faces-serve-test --network host -e BENTOML_HOST=127.0.0.1 -e BENTOML_PORT="$port" "$IMAGE" >/dev/null
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { docker logs faces-serve-test | tail -30; exit 1; }

photos=(service/example.jpg)
real=../shared/data/facescore/images
if [ -d "$real" ]; then real_photos=("$real"/*.jpg); photos+=("${real_photos[0]}"); fi
for photo in "${photos[@]}"; do
  answer=$(curl -sf -F "image=@$photo" "http://127.0.0.1:$port/predict")
  echo "$photo -> $answer"
  echo "$answer" | $PY -c 'import json,sys; b=json.load(sys.stdin); assert b["gender"] in ("female","male") and 1 <= b["rating"] <= 5'
done
code=$(curl -s -o /dev/null -w '%{http_code}' -F "image=@Dockerfile;type=image/jpeg" "http://127.0.0.1:$port/predict")
[ "$code" = 400 ] || { echo "bad upload answered $code, not 400"; exit 1; }
user=$(docker exec faces-serve-test id -u)
[ "$user" = 10001 ] || { echo "container runs as uid $user"; exit 1; }
echo "container-test: OK (image $IMAGE, base $BASE, port $port, uid $user)"
