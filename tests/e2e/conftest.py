"""Fixtures for Berth's end-to-end tests with real registry clients.

By default a `berth serve --no-auth` is started on a free loopback port with a temporary
data dir (binary from $BERTH_BIN, default /root/.cache/berth-target/debug/berth).
Set BERTH_E2E_EXTERNAL_URL=http://HOST:PORT to test an already running registry instead
(for example the CNCF distribution registry). Set BERTH_E2E_REPLICAS=2 to test several
replicas on PostgreSQL and S3 behind a round-robin proxy instead (replicas.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

sys.path.insert(0, str(Path(__file__).parent))

DEFAULT_BERTH_BIN = "/root/.cache/berth-target/debug/berth"
READY_TIMEOUT_S = 30

# Path of the berth server log of this session, if we started one (for failure reports).
_SERVER_LOG: dict[str, Path] = {}


# --------------------------------------------------------------------------------------
# Missing tools: skip locally, fail in CI
# --------------------------------------------------------------------------------------


def missing(what: str, how: str):
    msg = f"{what} is not installed ({how}); run tests/e2e/install.sh"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {msg}", pytrace=False)
    pytest.skip(msg)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(name, f"`{name}` not on PATH")
    return path


# --------------------------------------------------------------------------------------
# The registry under test
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The registry is on loopback: never go through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    try:
        with _OPENER.open(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stop_server(proc: subprocess.Popen, log) -> None:
    """SIGTERM a berth started by a fixture (SIGKILL if it hangs) and close its log."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    log.close()


def _log_tail(path: Path, limit: int = 20000) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return data[-limit:]


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> str:
    """`host:port` of an open (no auth) plain-HTTP OCI registry."""
    external = os.environ.get("BERTH_E2E_EXTERNAL_URL")
    if external:
        u = urlparse(external if "://" in external else "http://" + external)
        host = u.netloc
        status = _http_status(f"http://{host}/v2/")
        if status != 200:
            pytest.fail(f"external registry {external}: GET /v2/ answered {status}, want 200",
                        pytrace=False)
        yield host
        return

    berth = os.environ.get("BERTH_BIN", DEFAULT_BERTH_BIN)
    if not (os.path.isfile(berth) and os.access(berth, os.X_OK)):
        pytest.fail(f"berth binary {berth} not found: build it (cargo build -p berth) or set "
                    "BERTH_BIN, or set BERTH_E2E_EXTERNAL_URL", pytrace=False)
    if replica_count():
        reps = start_replicas(berth, tmp_path_factory.mktemp("berth-replicas"), ["--no-auth"])
        _REPLICAS["open"] = reps
        try:
            yield reps.host
        finally:
            reps.stop()
            for name in reps.logs():
                _SERVER_LOG.pop(name, None)
        return
    base = tmp_path_factory.mktemp("berth")
    data_dir = base / "data"
    log_path = base / "berth.log"
    port = _free_port()
    host = f"127.0.0.1:{port}"
    cmd = [berth, "serve", "--listen", host, "--data-dir", str(data_dir), "--no-auth"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    _SERVER_LOG["path"] = log_path
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"berth exited with status {proc.returncode} before it was ready\n"
                            f"command: {' '.join(cmd)}\nlog:\n{_log_tail(log_path)}",
                            pytrace=False)
            if _http_status(f"http://{host}/readyz") == 200:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"berth did not answer 200 on /readyz within {READY_TIMEOUT_S}s\n"
                            f"command: {' '.join(cmd)}\nlog:\n{_log_tail(log_path)}",
                            pytrace=False)
            time.sleep(0.1)
        yield host
    finally:
        stop_server(proc, log)
        crashed = proc.returncode not in (0, -15, 143)
        if crashed:
            sys.stderr.write(f"\nberth exited with status {proc.returncode}; log:\n"
                             f"{_log_tail(log_path)}\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        # "path": the open registry's log; other keys: other servers (e.g. "auth").
        for name, path in _SERVER_LOG.items():
            title = "berth server log" if name == "path" else f"berth server log ({name})"
            rep.sections.append((f"{title} (tail)", _log_tail(path, 8000)))


def replica_count() -> int:
    """BERTH_E2E_REPLICAS, or 0 for one embedded-default berth."""
    n = int(os.environ.get("BERTH_E2E_REPLICAS") or 0)
    if n == 1 or n < 0:
        pytest.fail("BERTH_E2E_REPLICAS must be 2 or more", pytrace=False)
    return n


# The Replicas the `registry` fixture started ("open"), for test_replicas.py.
_REPLICAS: dict = {}


def start_replicas(berth: str, base: Path, args: list, extra_env: dict | None = None,
                   tls_ca: Path | None = None):
    """`replica_count()` replicas on a fresh database and bucket prefix, behind nginx."""
    from replicas import Replicas, missing_services

    gone = missing_services()
    if gone:
        pytest.fail(f"BERTH_E2E_REPLICAS needs the test services ({', '.join(gone)} unset): "
                    "run tests/services/start.sh DIR and source DIR/env", pytrace=False)
    try:
        reps = Replicas.start(berth, base, replica_count(), _free_port, args=args,
                              extra_env=extra_env, ready_timeout=READY_TIMEOUT_S,
                              tls_ca=tls_ca)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    for name, path in reps.logs().items():
        _SERVER_LOG[name] = path
    return reps


# --------------------------------------------------------------------------------------
# Per-test helpers
# --------------------------------------------------------------------------------------


@pytest.fixture
def repo(request) -> str:
    """A repository name unique to this test run, like `e2e/test-foo-1a2b3c4d`."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    return f"e2e/{name}-{uuid.uuid4().hex[:8]}"


def make_client_env(base: Path) -> dict:
    """Environment for skopeo/podman that does not depend on the machine's /etc/containers
    or on the user's home: own policy.json (accept anything), registries.conf, containers.conf,
    storage.conf, auth file and temp dir, all under `base` (created)."""
    base.mkdir(parents=True, exist_ok=True)
    home = base / "home"
    (home / ".config" / "containers").mkdir(parents=True)
    tmp = base / "tmp"
    tmp.mkdir()
    policy = base / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    # The user policy path too, for commands that have no --policy/--signature-policy flag.
    shutil.copy(policy, home / ".config" / "containers" / "policy.json")
    registries = base / "registries.conf"
    registries.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
    containers_conf = base / "containers.conf"
    containers_conf.write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{base}/events.log"\n'
        '[containers]\n'
    )
    storage_conf = base / "storage.conf"
    storage_conf.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{base}/run"\ngraphroot = "{base}/root"\n'
    )
    auth = base / "auth.json"
    auth.write_text('{"auths": {}}')
    env = dict(os.environ)
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "TMPDIR": str(tmp),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
        "CONTAINERS_CONF": str(containers_conf),
        "CONTAINERS_STORAGE_CONF": str(storage_conf),
        "REGISTRY_AUTH_FILE": str(auth),
        "E2E_POLICY": str(policy),
        "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1,localhost"])),
        "no_proxy": ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1,localhost"])),
    })
    return env


@pytest.fixture(scope="session")
def client_env(tmp_path_factory, registry) -> dict:
    """`make_client_env` for the session (one auth file for every test)."""
    return make_client_env(tmp_path_factory.mktemp("containers"))


class Skopeo:
    """`skopeo` with this suite's own policy and config; `ref(repo, tag)` -> docker:// ref."""

    def __init__(self, env: dict, registry: str):
        self.env = env
        self.registry = registry

    def __call__(self, *args, check=True, timeout=60):
        from helpers import run

        return run(["skopeo", "--policy", self.env["E2E_POLICY"], *args], env=self.env,
                   check=check, timeout=timeout)

    def ref(self, repo: str, tag_or_digest: str) -> str:
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"docker://{self.registry}/{repo}{sep}{tag_or_digest}"

    def inspect(self, ref: str, *extra, tags: bool = False) -> dict:
        """`skopeo inspect`; without tags=True it passes --no-tags, so that only the test
        that checks RepoTags depends on the tags/list endpoint."""
        notags = [] if tags else ["--no-tags"]
        return json.loads(self("inspect", "--tls-verify=false", *notags, *extra, ref).stdout)

    def raw(self, ref: str, *extra) -> bytes:
        # --raw prints the manifest bytes exactly as served; keep them as bytes.
        from helpers import run

        proc = subprocess.run(
            ["skopeo", "--policy", self.env["E2E_POLICY"], "inspect", "--tls-verify=false",
             "--raw", *extra, ref],
            env=self.env, capture_output=True, timeout=60,
        )
        assert proc.returncode == 0, (
            f"skopeo inspect --raw {ref} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout


@pytest.fixture(scope="session")
def skopeo(client_env, registry) -> Skopeo:
    require_binary("skopeo")
    return Skopeo(client_env, registry)


class Podman:
    """`podman` with its own storage (vfs), run root and temp dir, and no systemd or
    container runtime needed (pull/push/import/manifest only)."""

    def __init__(self, env: dict, registry: str, base: Path):
        self.env = env
        self.registry = registry
        self.base = base
        self.global_args = [
            "--root", str(base / "root"), "--runroot", str(base / "run"),
            "--tmpdir", str(base / "libpod-tmp"), "--storage-driver", "vfs",
            "--cgroup-manager=cgroupfs", "--events-backend=file",
        ]

    def __call__(self, *args, check=True, timeout=60):
        from helpers import run

        return run(["podman", *self.global_args, *args], env=self.env, check=check,
                   timeout=timeout)

    def image_ids(self) -> list[str]:
        out = self("images", "--no-trunc", "--quiet").stdout.split()
        return sorted({i.removeprefix("sha256:") for i in out})

    def inspect(self, image: str) -> dict:
        return json.loads(self("image", "inspect", image).stdout)[0]


@pytest.fixture
def podman(client_env, registry):
    """A podman with storage private to this test."""
    require_binary("podman")
    # podman refuses a --runroot longer than 50 characters, so no pytest tmp_path here.
    base = Path(tempfile.mkdtemp(prefix="berth-e2e-pm-", dir="/tmp"))
    p = Podman(client_env, registry, base)
    try:
        yield p
    finally:
        # vfs layers are plain directories; nothing is mounted by pull/push/import.
        p("rmi", "--all", "--force", check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def oras_client(registry, monkeypatch):
    """oras-py client for the registry over plain HTTP.

    oras-py has no per-call "plain HTTP" switch: `Registry(insecure=True)` makes it build
    every URL with the `http://` prefix (provider.Registry.__init__: self.prefix = "http" if
    insecure else "https"), and tls_verify only matters for https."""
    try:
        import oras.client
        import oras.decorator
    except ImportError:
        missing("the oras Python package", "`import oras` failed")
    # oras-py retries a failed request (exception or HTTP 500) 5 times sleeping 2+3**n
    # seconds (about 2 minutes); keep the retries but not the long waits. (oras.decorator
    # uses the time module, so this patches time.sleep for the duration of the test.)
    real_sleep = time.sleep
    monkeypatch.setattr(oras.decorator.time, "sleep", lambda s: real_sleep(min(s, 0.2)))
    client = oras.client.OrasClient(hostname=registry, insecure=True)
    client.session.trust_env = False  # loopback registry: ignore proxy settings
    return client
