"""A team's shared services, on loopback: an S3 API, PostgreSQL and an MLflow tracking server.

    python deploy/stack.py [--dir .stack] [--s3-port 9000] [--pg-port 5433] [--mlflow-port 5001]
    (make tracking-server)

Starts, each in its own process group:
- an S3-compatible endpoint: moto's server (what the tests use; MinIO or AWS S3 in production), with
  the buckets `faces-dvc` (the DVC remote) and `faces-mlflow` (MLflow's artifact store);
- PostgreSQL (Debian's packages) in `<dir>/pg`, database `mlflow`, trust auth on 127.0.0.1 only;
- `mlflow server` with the PostgreSQL backend and `--artifacts-destination s3://faces-mlflow`: clients
  log artifacts through the server (`mlflow-artifacts:`), so they need no S3 credentials.
Prints the environment a stage needs (MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL, ...) and stops
everything on Ctrl-C. The tests import `Stack` for the same services.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
BUCKETS = ("faces-dvc", "faces-mlflow")
# moto accepts any key; a real endpoint takes yours from the environment (never from the repo)
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def pg_bin(tool: str) -> str:
    """A PostgreSQL server binary: PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(tool) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), default=None)
    if found is None:
        raise FileNotFoundError(f"{tool} not found: apt-get install postgresql")
    return found


def _wait(url: str, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as e:
            if getattr(e, "code", None):              # an HTTP error status: the server answers
                return
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {seconds:.0f} s")


@dataclass
class Stack:
    root: Path
    s3_port: int
    pg_port: int
    mlflow_port: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def db_uri(self) -> str:
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.pg_port}/mlflow"   # SQLAlchemy 2.1's default is psycopg 3

    def env(self) -> dict[str, str]:
        """What a stage or `dvc push` needs to use these services."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "AWS_ENDPOINT_URL": self.s3_url, **S3_KEYS}

    def _spawn(self, cmd: list[str], log: str, env: dict | None = None, user: str | None = None):
        if user:                                      # postgres refuses to run as root
            cmd = ["runuser", "-u", user, "--", *cmd]
        with open(self.root / log, "ab") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def start_s3(self) -> None:
        p = self._spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)], "s3.log")
        _wait(self.s3_url, 60, p)
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3_url, **{k.lower(): v for k, v in S3_KEYS.items()
                                                              if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
        for bucket in BUCKETS:
            s3.create_bucket(Bucket=bucket)

    def start_postgres(self) -> None:
        user = "postgres" if os.geteuid() == 0 else None
        # as root the server runs as Debian's `postgres` user, which must reach its folder: not under a
        # root-only one (pytest's tmp), so then it lives in /tmp/faces-pg-<port>
        data = Path(f"/tmp/faces-pg-{self.pg_port}") if user else self.root / "pg"
        if not (data / "PG_VERSION").is_file():
            data.mkdir(parents=True, exist_ok=True)
            if user:
                shutil.chown(data, user)
            cmd = [pg_bin("initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"]
            subprocess.run(["runuser", "-u", user, "--", *cmd] if user else cmd, check=True, capture_output=True)
        p = self._spawn([pg_bin("postgres"), "-D", str(data), "-p", str(self.pg_port), "-k", str(data),
                         "-c", "listen_addresses=127.0.0.1"], "pg.log", user=user)
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="mlflow", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {(self.root / 'pg.log').read_text()[-800:]}") from None
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE mlflow")
        conn.close()

    def start_mlflow(self) -> None:
        env = {"MLFLOW_S3_ENDPOINT_URL": self.s3_url, **S3_KEYS, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        p = self._spawn([str(BIN / "mlflow"), "server", "--backend-store-uri", self.db_uri,
                         "--artifacts-destination", "s3://faces-mlflow/artifacts", "--host", "127.0.0.1",
                         "--port", str(self.mlflow_port), "--workers", "2"], "mlflow.log", env)
        _wait(f"{self.tracking_uri}/health", 120, p)

    def start(self) -> Stack:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.start_s3()
            self.start_postgres()
            self.start_mlflow()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description="S3 API + PostgreSQL + mlflow server on loopback")
    ap.add_argument("--dir", type=Path, default=Path(".stack"))
    ap.add_argument("--s3-port", type=int, default=9000)
    ap.add_argument("--pg-port", type=int, default=5433)
    ap.add_argument("--mlflow-port", type=int, default=5001)
    args = ap.parse_args()
    stack = Stack(args.dir.resolve(), args.s3_port, args.pg_port, args.mlflow_port)
    try:
        stack.start()
        print("tracking server up; in another shell:")
        for k, v in stack.env().items():
            print(f"  export {k}={v}")
        print(f"  make repro    # runs log to {stack.tracking_uri}, artifacts in s3://faces-mlflow")
        print("  make push     # the DVC cache to s3://faces-dvc (the remote in .dvc/config)")
        print(f"logs: {args.dir}/*.log; Ctrl-C stops")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
