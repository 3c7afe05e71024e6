#!/usr/bin/env bash
# deploy/compose.yaml on this machine: 2 replicas of the image `make container-test` built, behind
# HAProxy; deploy/failover.py sends traffic through it and stops one replica mid-load.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${COMPOSE_TEST_DIR:-/tmp/faces-compose-test}
mkdir -p "$WORK"
source docker/engine.sh
need docker-compose docker-compose
export IMAGE=${IMAGE:-faces-serve:test} BASE_IMAGE=${BASE_IMAGE:-faces-base:bookworm} LB_IMAGE=faces-haproxy:test
export LB_PORT=$(free_port) REPLICA_A_PORT=$(free_port) REPLICA_B_PORT=$(free_port)
compose=(docker-compose -f deploy/compose.yaml -p faces-compose-test)
cleanup() {
  "${compose[@]}" logs --no-color >"$WORK/compose.log" 2>&1 || true
  "${compose[@]}" down -t 5 >/dev/null 2>&1 || true
  engine_stop
}
trap cleanup EXIT
engine_start "$WORK"
for image in "$IMAGE" "$BASE_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "no image $image: run 'make container-test' first"; exit 1; }
done
"${compose[@]}" build lb >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; exit 1; }
"${compose[@]}" up -d >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; exit 1; }
for port in "$REPLICA_A_PORT" "$REPLICA_B_PORT" "$LB_PORT"; do
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { "${compose[@]}" logs --tail 30; exit 1; }
done
sleep 3                      # HAProxy marks a server up after two passed checks (rise 2, inter 1s)
.venv/bin/python deploy/failover.py --lb "http://127.0.0.1:$LB_PORT" \
  --replicas "http://127.0.0.1:$REPLICA_A_PORT" "http://127.0.0.1:$REPLICA_B_PORT" \
  --stop "${compose[*]} stop -t 20 replica-a" --requests "${FAILOVER_REQUESTS:-240}" --concurrency 8
