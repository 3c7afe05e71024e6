"""A team's shared services, on loopback: an S3 API, PostgreSQL and an MLflow tracking server.

    python deploy/stack.py [--dir .stack] [--s3-port 9000] [--pg-port 5433] [--mlflow-port 5001]
    (make tracking-server)

Starts, each in its own process group:
- an S3-compatible endpoint: moto's server (what the tests use; MinIO or AWS S3 in production), with
  the buckets `faces-dvc` (the DVC remote) and `faces-mlflow` (MLflow's artifact store);
- PostgreSQL (Debian's packages) in `<dir>/pg` on 127.0.0.1, password (SCRAM) auth for every
  connection; the `mlflow` role is no superuser: it may log in and owns its two databases (`mlflow`,
  the tracking and registry store; `mlflow_auth`, the server's users), nothing else;
- `mlflow server --app-name basic-auth` with the PostgreSQL backend and `--artifacts-destination
  s3://faces-mlflow`: every request needs a user and password (a request without them gets 401), and
  clients log artifacts through the server (`mlflow-artifacts:`), so they need no S3 credentials.
  The `admin` user creates a `pipeline` user, which the stages use: it may create experiments and
  models (and manage what it created) and read the rest, but it cannot manage users.
The passwords are drawn at the first start and kept in `<dir>/secrets.json` (mode 0600). Prints the
environment a stage needs (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD, AWS_ENDPOINT_URL,
...) and stops everything on Ctrl-C. The tests import `Stack` for the same services.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
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
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def db_uri(self, db: str = "mlflow") -> str:     # psycopg2: SQLAlchemy 2.1's default is psycopg 3
        return f"postgresql+psycopg2://mlflow:{self.passwords['pg-mlflow']}@127.0.0.1:{self.pg_port}/{db}"

    def env(self, user: str = "pipeline") -> dict[str, str]:
        """What a stage or `dvc push` needs to use these services (as `user`: pipeline or admin)."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": self.passwords[f"mlflow-{user}"], "AWS_ENDPOINT_URL": self.s3_url, **S3_KEYS}

    def _secrets(self) -> None:
        """The passwords of this stack's folder: drawn once, then read back (0600, never in the repo)."""
        path = self.root / "secrets.json"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({k: secrets.token_urlsafe(18) for k in ("pg-admin", "pg-mlflow", "mlflow-admin",
                                                                  "mlflow-pipeline")}, f)
        self.passwords = json.loads(path.read_text())

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
        if (data / "PG_VERSION").is_file() and not (data / "faces-scram").is_file():
            raise SystemExit(f"{data} was made by an older stack.py with trust auth: delete it to start over")
        if not (data / "PG_VERSION").is_file():
            data.mkdir(parents=True, exist_ok=True)
            pwfile = data.parent / f".{data.name}.pw"
            pwfile.write_text(self.passwords["pg-admin"] + "\n")
            if user:
                shutil.chown(data, user)
                shutil.chown(pwfile, user)
            cmd = [pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
                   f"--pwfile={pwfile}", "-E", "UTF8"]
            try:
                subprocess.run(["runuser", "-u", user, "--", *cmd] if user else cmd, check=True, capture_output=True)
            finally:
                pwfile.unlink()
            (data / "faces-scram").touch()
        p = self._spawn([pg_bin("postgres"), "-D", str(data), "-p", str(self.pg_port), "-k", str(data),
                         "-c", "listen_addresses=127.0.0.1"], "pg.log", user=user)
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="postgres",
                                        password=self.passwords["pg-admin"])
                break
            except psycopg2.OperationalError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {(self.root / 'pg.log').read_text()[-800:]}") from None
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:          # the role MLflow uses: log in, own its databases, nothing more
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f"{verb} ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                        "PASSWORD %s", (self.passwords["pg-mlflow"],))
            for db in ("mlflow", "mlflow_auth"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {db} OWNER mlflow")
            cur.execute("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
        conn.close()

    def start_mlflow(self) -> None:
        auth = self.root / "basic_auth.ini"         # MLflow's basic-auth app; users in PostgreSQL
        auth.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {self.db_uri('mlflow_auth')}\n"
                        "admin_username = admin\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        auth.chmod(0o600)
        env = {"MLFLOW_S3_ENDPOINT_URL": self.s3_url, **S3_KEYS, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_AUTH_CONFIG_PATH": str(auth),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.passwords["mlflow-admin"],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": self.passwords["mlflow-admin"] + "-csrf"}
        p = self._spawn([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri",
                         self.db_uri(), "--artifacts-destination", "s3://faces-mlflow/artifacts", "--host",
                         "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "2"], "mlflow.log", env)
        _wait(f"{self.tracking_uri}/health", 120, p)
        self._pipeline_user()

    def _pipeline_user(self) -> None:
        """The stages' user (not an admin), created by the admin once."""
        import requests

        base, admin = self.tracking_uri, ("admin", self.passwords["mlflow-admin"])
        r = requests.get(f"{base}/api/2.0/mlflow/users/get", params={"username": "pipeline"}, auth=admin, timeout=30)
        if r.status_code == 200:
            return
        r = requests.post(f"{base}/api/2.0/mlflow/users/create", auth=admin, timeout=30,
                          json={"username": "pipeline", "password": self.passwords["mlflow-pipeline"]})
        r.raise_for_status()

    def start(self) -> Stack:
        self.root.mkdir(parents=True, exist_ok=True)
        self._secrets()
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
        print(f"(the admin's password: {args.dir}/secrets.json)")
        print(f"  make repro    # runs log to {stack.tracking_uri}, artifacts in s3://faces-mlflow")
        print("  make push     # the DVC cache to s3://faces-dvc (the remote in .dvc/config)")
        print(f"logs: {args.dir}/*.log; Ctrl-C stops")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
