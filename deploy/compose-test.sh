#!/usr/bin/env bash
# deploy/compose.yaml on this machine: the image `make container-test` built, pushed to a registry on
# loopback (Debian's docker-registry) by deploy/rollout.py, which pins its digest as it would for
# deploy/k8s; 2 replicas of exactly that digest behind HAProxy; deploy/failover.py sends traffic
# through it and stops one replica mid-load; deploy/lb_retries.py shows what HAProxy retries.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${COMPOSE_TEST_DIR:-/tmp/faces-compose-test}
mkdir -p "$WORK"
source docker/engine.sh
need docker-compose docker-compose
need docker-registry docker-registry
SOURCE=${IMAGE:-faces-serve:test}
export BASE_IMAGE=${BASE_IMAGE:-faces-base:bookworm} LB_IMAGE=faces-haproxy:test
export LB_PORT=$(free_port) REPLICA_A_PORT=$(free_port) REPLICA_B_PORT=$(free_port)
compose=(docker-compose -f deploy/compose.yaml -p faces-compose-test)
REGISTRY_PORT=$(free_port)
cleanup() {
  [ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null || true
  "${compose[@]}" logs --no-color >"$WORK/compose.log" 2>&1 || true
  "${compose[@]}" down -t 5 >/dev/null 2>&1 || true
  engine_stop
}
trap cleanup EXIT
engine_start "$WORK"
for image in "$SOURCE" "$BASE_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "no image $image: run 'make container-test' first"; exit 1; }
done
# the rollout as deploy/k8s gets it: push, then the digest the registry answered (never a tag)
rm -rf "$WORK/registry"
printf 'version: 0.1\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: "127.0.0.1:%s"}\n' \
  "$WORK/registry" "$REGISTRY_PORT" >"$WORK/registry.yml"        # no auth: loopback only, this test's
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 30); do curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null && break; sleep 0.5; done
cp deploy/k8s/cpu/kustomization.yaml "$WORK/kustomization.yaml"
.venv/bin/python deploy/rollout.py --registry "127.0.0.1:$REGISTRY_PORT" --from "$SOURCE" \
  --kustomization "$WORK/kustomization.yaml" --env-file "$WORK/image.env"
set -a; . "$WORK/image.env"; set +a          # IMAGE=127.0.0.1:PORT/faces-serve@sha256:...
"${compose[@]}" build lb >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; exit 1; }
"${compose[@]}" up -d >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; exit 1; }
for port in "$REPLICA_A_PORT" "$REPLICA_B_PORT" "$LB_PORT"; do
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 1; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { "${compose[@]}" logs --tail 30; exit 1; }
done
for c in replica-a replica-b; do            # each replica runs the pinned digest, nothing else
  ran=$(docker inspect --format '{{.Config.Image}}' "$("${compose[@]}" ps -q "$c")")
  [ "$ran" = "$IMAGE" ] || { echo "compose-test: $c runs $ran, not $IMAGE"; exit 1; }
done
echo "compose-test: both replicas run $IMAGE"
sleep 3                      # HAProxy marks a server up after two passed checks (rise 2, inter 1s)
.venv/bin/python deploy/failover.py --lb "http://127.0.0.1:$LB_PORT" \
  --replicas "http://127.0.0.1:$REPLICA_A_PORT" "http://127.0.0.1:$REPLICA_B_PORT" \
  --stop "${compose[*]} stop -t 20 replica-a" --requests "${FAILOVER_REQUESTS:-240}" --concurrency 8
.venv/bin/python deploy/lb_retries.py \
  --start "docker run -d --network host --name faces-lb-retries -e LB_PORT={lb} -e REPLICA_A=127.0.0.1:{a} -e REPLICA_B=127.0.0.1:{b} $LB_IMAGE" \
  --stop "docker rm -f faces-lb-retries"
