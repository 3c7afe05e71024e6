# Sourced by docker/container-test.sh and deploy/compose-test.sh: a Docker engine that runs here.
# Starts dockerd (no bridge, no iptables: host networking only) when none answers; `engine_stop`
# stops only a dockerd started here.
need() {   # $1: a command, $2: the Debian package that has it
  command -v "$1" >/dev/null && return
  echo "installing $2"
  apt-get install -y -q "$2" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
}
started_dockerd=""
engine_start() {   # $1: a folder for dockerd.log
  need docker docker.io
  need dockerd docker.io
  if ! docker info >/dev/null 2>&1; then
    dockerd --bridge=none --iptables=false --ip6tables=false >"$1/dockerd.log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null
  fi
}
engine_stop() {
  if [ -n "$started_dockerd" ]; then kill "$started_dockerd" 2>/dev/null || true; wait "$started_dockerd" 2>/dev/null || true; fi
}
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
