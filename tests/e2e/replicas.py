"""Several Berth replicas on one PostgreSQL database and one S3 bucket, behind nginx.

`BERTH_E2E_REPLICAS=N` (N >= 2) makes the session's `registry` fixture a `Replicas`: N
`berth serve` processes sharing a fresh PostgreSQL database (created on the server of
BERTH_TEST_POSTGRES_URL) and a fresh key prefix of the bucket of BERTH_TEST_S3_*, with
an nginx in front that hands each request to the next replica in turn (round robin, no
retries on another replica). So consecutive requests of one client, including the
POST/PATCH/PUT of one upload and a token fetched from one replica and used on another,
land on different replicas, as behind a Kubernetes Service.

With `tls_ca`, every replica serves HTTPS itself (the caller's BERTH_SERVER__TLS_* in
`extra_env`) and nginx passes the TCP connections through untouched (its stream
module), so clients verify the replicas' own certificate; nginx then balances
connections rather than requests.

tests/services/start.sh starts the PostgreSQL and S3 servers and writes their env.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SERVICE_VARS = (
    "BERTH_TEST_POSTGRES_URL",
    "BERTH_TEST_S3_ENDPOINT",
    "BERTH_TEST_S3_REGION",
    "BERTH_TEST_S3_BUCKET",
    "BERTH_TEST_S3_ACCESS_KEY_ID",
    "BERTH_TEST_S3_SECRET_ACCESS_KEY",
)


def missing_services() -> list[str]:
    return [v for v in SERVICE_VARS if not os.environ.get(v)]


def _opener(ca: Path | None):
    """An opener without proxies; with `ca`, verifying HTTPS servers against it."""
    if ca is None:
        return _OPENER
    ctx = ssl.create_default_context(cafile=str(ca))
    return urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                       urllib.request.HTTPSHandler(context=ctx))


def _status(url: str, ca: Path | None = None) -> int | None:
    try:
        with _opener(ca).open(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _fresh_database(server_url: str) -> str:
    """Creates an empty database on the server and returns its URL."""
    name = f"berth_e2e_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", server_url, "-qtAc", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True, timeout=60)
    u = urlparse(server_url)
    return urlunparse(u._replace(path="/" + name))


def shared_env(prefix: str) -> dict:
    """BERTH_* settings that put a replica on the shared database and bucket."""
    return {
        "BERTH_METADATA__URL": _fresh_database(os.environ["BERTH_TEST_POSTGRES_URL"]),
        "BERTH_STORAGE__BACKEND": "s3",
        "BERTH_STORAGE__S3__ENDPOINT": os.environ["BERTH_TEST_S3_ENDPOINT"],
        "BERTH_STORAGE__S3__REGION": os.environ["BERTH_TEST_S3_REGION"],
        "BERTH_STORAGE__S3__BUCKET": os.environ["BERTH_TEST_S3_BUCKET"],
        "BERTH_STORAGE__S3__ACCESS_KEY_ID": os.environ["BERTH_TEST_S3_ACCESS_KEY_ID"],
        "BERTH_STORAGE__S3__SECRET_ACCESS_KEY": os.environ["BERTH_TEST_S3_SECRET_ACCESS_KEY"],
        "BERTH_STORAGE__S3__PREFIX": prefix,
    }


# What both configurations start with: one worker in the foreground, files under base.
NGINX_HEAD = """
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 1024; }}
"""

NGINX_CONF = NGINX_HEAD + """http {{
    access_log {base}/nginx-access.log;
    client_body_temp_path {base}/client_body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    upstream berth {{
{servers}
    }}
    server {{
        listen {listen};
        # Stream bodies both ways, as a registry's ingress must; any size.
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        location / {{
            proxy_pass http://berth;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            # A failed request is the client's to see, not retried elsewhere.
            proxy_next_upstream off;
        }}
    }}
}}
"""


# TLS passes through: one TCP connection goes to one replica, which terminates it.
NGINX_STREAM_CONF = "load_module {module};\n" + NGINX_HEAD + """stream {{
    upstream berth {{
{servers}
    }}
    server {{
        listen {listen};
        proxy_pass berth;
        proxy_next_upstream off;
    }}
}}
"""

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


@dataclass
class Replica:
    host: str
    proc: subprocess.Popen
    log_path: Path
    log: object


@dataclass
class Replicas:
    """N replicas behind a round-robin nginx; `host` is nginx's `host:port`."""

    berth: str
    base: Path
    env: dict
    replicas: list[Replica] = field(default_factory=list)
    nginx: subprocess.Popen | None = None
    host: str = ""
    # The CA of the replicas' own certificate: they serve HTTPS, nginx passes TCP through.
    tls_ca: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_ca else "http"

    @classmethod
    def start(cls, berth: str, base: Path, n: int, free_port, args=(), extra_env=None,
              ready_timeout: float = 30, tls_ca: Path | None = None) -> "Replicas":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise RuntimeError("nginx is not installed (tests/e2e/install.sh installs it)")
        env = dict(os.environ, **shared_env(f"e2e-{uuid.uuid4().hex[:12]}"),
                   **(extra_env or {}))
        r = cls(berth=berth, base=base, env=env, tls_ca=tls_ca)
        try:
            for i in range(n):
                r._spawn(i, free_port(), list(args), ready_timeout)
            r._start_nginx(nginx, free_port(), ready_timeout)
        except BaseException:
            r.stop()
            raise
        return r

    def _spawn(self, i: int, port: int, args: list, ready_timeout: float) -> None:
        host = f"127.0.0.1:{port}"
        # Each replica has its own (scratch) data directory: nothing in it is shared.
        data_dir = self.base / f"replica-{i}"
        log_path = self.base / f"replica-{i}.log"
        log = open(log_path, "wb")
        cmd = [self.berth, "serve", "--listen", host, "--data-dir", str(data_dir), *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        rep = Replica(host=host, proc=proc, log_path=log_path, log=log)
        self.replicas.append(rep)
        deadline = time.monotonic() + ready_timeout
        while _status(f"{self.scheme}://{host}/readyz", self.tls_ca) != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"replica {i} exited with status {proc.returncode}:\n"
                                   + log_path.read_text(errors="replace")[-8000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {i} not ready within {ready_timeout}s:\n"
                                   + log_path.read_text(errors="replace")[-8000:])
            time.sleep(0.1)

    def _start_nginx(self, nginx: str, port: int, ready_timeout: float) -> None:
        nbase = self.base / "nginx"
        nbase.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server {r.host} max_fails=0;" for r in self.replicas)
        conf = nbase / "nginx.conf"
        listen = f"127.0.0.1:{port}"
        if self.tls_ca:
            if not os.path.exists(NGINX_STREAM_MODULE):
                raise RuntimeError(f"{NGINX_STREAM_MODULE} is missing: install libnginx-mod-stream "
                                   "(tests/e2e/install.sh does)")
            conf.write_text(NGINX_STREAM_CONF.format(module=NGINX_STREAM_MODULE, base=nbase,
                                                     servers=servers, listen=listen))
        else:
            conf.write_text(NGINX_CONF.format(base=nbase, servers=servers, listen=listen))
        log = open(nbase / "nginx.out", "wb")
        self.nginx = subprocess.Popen([nginx, "-c", str(conf), "-p", str(nbase)], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        self.host = listen
        deadline = time.monotonic() + ready_timeout
        ready = (f"https://{listen}/readyz" if self.tls_ca else f"http://{listen}/healthz")
        while _status(ready, self.tls_ca) != 200:
            if self.nginx.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start:\n"
                                   + (nbase / "nginx-error.log").read_text(errors="replace"))
            time.sleep(0.1)

    def requests_served(self, auth: tuple[str, str] | None = None) -> list[int]:
        """berth_http_requests_total summed, per replica (from each replica's /metrics;
        `auth`: user and password, when authentication is on)."""
        opener = _opener(self.tls_ca)
        out = []
        for r in self.replicas:
            req = urllib.request.Request(f"{self.scheme}://{r.host}/metrics")
            if auth:
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                req.add_header("Authorization", f"Basic {token}")
            with opener.open(req, timeout=5) as resp:
                text = resp.read().decode()
            out.append(sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                           if line.startswith("berth_http_requests_total")))
        return out

    def cli(self, *args, input: str | None = None, check: bool = True, timeout: float = 60):
        """A `berth` CLI command on the shared database and bucket."""
        return subprocess.run([self.berth, *args, "--data-dir", str(self.base / "cli")],
                              input=input, env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def logs(self) -> dict[str, Path]:
        return {f"replica {i}": r.log_path for i, r in enumerate(self.replicas)}

    def stop(self) -> None:
        if self.nginx and self.nginx.poll() is None:
            self.nginx.terminate()
            try:
                self.nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
        for r in self.replicas:
            if r.proc.poll() is None:
                r.proc.terminate()
                try:
                    r.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait(timeout=10)
            r.log.close()
