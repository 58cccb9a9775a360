"""End-to-end: logging in with real clients to a Berth with authentication on (issue 4).

A second Berth is started for this module *without* `--no-auth` (the first start creates
`admin` from BERTH_ADMIN_PASSWORD); users, a team and access tokens are made with the
`berth` CLI on the same data directory while it runs. Over plain HTTP on 127.0.0.1:

- skopeo login + copy into one's own namespace (and a team's) succeeds, into another
  user's is refused with a clear message; an access token works as the password;
- podman login + push/pull;
- the oras Python package with a username and password;
- docker login: the Docker CLI logs in without an engine (it checks the credentials with
  `GET /v2/` itself), and the credentials it stores work with skopeo.

Every failed login counts towards the per-address throttle (5 free failures from
127.0.0.1), so this module makes only two on purpose.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import (
    DEFAULT_BERTH_BIN,
    READY_TIMEOUT_S,
    Podman,
    Skopeo,
    _SERVER_LOG,
    _free_port,
    _http_status,
    _log_tail,
    make_client_env,
    missing,
    replica_count,
    require_binary,
    start_replicas,
    stop_server,
)
from helpers import new_image_layout, run, run_expect_failure

ADMIN_PASSWORD = "e2e-admin-password"


@dataclass
class AuthRegistry:
    host: str
    data_dir: Path
    berth: str
    passwords: dict = field(default_factory=dict)
    # With BERTH_E2E_REPLICAS: the replicas (the CLI then works on their database).
    replicas: object = None

    def cli(self, *args, input: str | None = None, check: bool = True):
        if self.replicas is not None:
            return self.replicas.cli(*args, input=input, check=check)
        return run([self.berth, *args, "--data-dir", self.data_dir], input=input, check=check,
                   timeout=60)

    def add_user(self, name: str) -> str:
        password = f"{name}-{secrets.token_hex(8)}"
        self.cli("user", "add", name, "--password-stdin", input=password + "\n")
        self.passwords[name] = password
        return password

    def create_token(self, user: str, name: str) -> str:
        out = self.cli("token", "create", "--user", user, "--name", name).stdout
        found = [line.strip() for line in out.splitlines() if line.strip().startswith("berth_")]
        assert len(found) == 1, f"token create printed no single berth_… line:\n{out}"
        return found[0]


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """A Berth with authentication on: users alice and bob, team web (alice)."""
    if os.environ.get("BERTH_E2E_EXTERNAL_URL"):
        pytest.skip("needs a Berth started here with auth on and its CLI; "
                    "BERTH_E2E_EXTERNAL_URL is set")
    berth = os.environ.get("BERTH_BIN", DEFAULT_BERTH_BIN)
    if not (os.path.isfile(berth) and os.access(berth, os.X_OK)):
        pytest.fail(f"berth binary {berth} not found: build it (cargo build -p berth) or set "
                    "BERTH_BIN", pytrace=False)
    base = tmp_path_factory.mktemp("berth-auth")
    if replica_count():
        yield from _auth_replicas(berth, base)
        return
    data_dir = base / "data"
    log_path = base / "berth.log"
    host = f"127.0.0.1:{_free_port()}"
    cmd = [berth, "serve", "--listen", host, "--data-dir", str(data_dir)]
    env = dict(os.environ, BERTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    _SERVER_LOG["auth"] = log_path
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _http_status(f"http://{host}/readyz") != 200:
            if proc.poll() is not None:
                pytest.fail(f"berth (auth on) exited with status {proc.returncode}\n"
                            f"log:\n{_log_tail(log_path)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"berth (auth on) not ready within {READY_TIMEOUT_S}s\n"
                            f"log:\n{_log_tail(log_path)}", pytrace=False)
            time.sleep(0.1)
        # With auth on, /v2/ asks for credentials.
        assert _http_status(f"http://{host}/v2/") == 401
        reg = AuthRegistry(host=host, data_dir=data_dir, berth=berth,
                           passwords={"admin": ADMIN_PASSWORD})
        reg.add_user("alice")
        reg.add_user("bob")
        reg.cli("team", "add", "web")
        reg.cli("team", "member", "add", "web", "alice")
        yield reg
    finally:
        stop_server(proc, log)
        _SERVER_LOG.pop("auth", None)


def _auth_replicas(berth: str, base: Path):
    """auth_registry as several replicas: tokens issued by one are checked by another."""
    reps = start_replicas(berth, base, [], {"BERTH_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        assert _http_status(f"http://{reps.host}/v2/") == 401
        reg = AuthRegistry(host=reps.host, data_dir=base / "cli", berth=berth,
                           passwords={"admin": ADMIN_PASSWORD}, replicas=reps)
        reg.add_user("alice")
        reg.add_user("bob")
        reg.cli("team", "add", "web")
        reg.cli("team", "member", "add", "web", "alice")
        yield reg
    finally:
        reps.stop()
        for name in reps.logs():
            _SERVER_LOG.pop(name, None)


@pytest.fixture
def auth_env(tmp_path) -> dict:
    """skopeo/podman environment with an auth file of this test alone."""
    return make_client_env(tmp_path / "containers")


@pytest.fixture
def auth_skopeo(auth_env, auth_registry) -> Skopeo:
    require_binary("skopeo")
    return Skopeo(auth_env, auth_registry.host)


@pytest.fixture
def auth_podman(auth_env, auth_registry):
    require_binary("podman")
    # podman refuses a --runroot longer than 50 characters, so no pytest tmp_path here.
    base = Path(tempfile.mkdtemp(prefix="berth-e2e-pa-", dir="/tmp"))
    p = Podman(auth_env, auth_registry.host, base)
    try:
        yield p
    finally:
        p("rmi", "--all", "--force", check=False)
        shutil.rmtree(base, ignore_errors=True)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _refused(proc) -> str:
    """The client's output for a refused operation, asserted to say why."""
    text = (proc.stdout + proc.stderr)
    low = text.lower()
    assert "403" in text or "denied" in low or "forbidden" in low, (
        f"the refusal does not say the access is denied (403/denied):\n{text}")
    return text


def _skopeo_login(skopeo: Skopeo, user: str, secret: str, check=True):
    return run(["skopeo", "login", "--tls-verify=false", "--username", user,
                "--password-stdin", skopeo.registry], env=skopeo.env, input=secret + "\n",
               check=check)


# --------------------------------------------------------------------------------------
# skopeo
# --------------------------------------------------------------------------------------


def test_skopeo_login_then_copy_into_own_and_team_namespace_succeeds_and_elsewhere_is_refused(
        auth_registry, auth_skopeo, tmp_path):
    reg, skopeo = auth_registry, auth_skopeo
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=2, layer_kib=(64, 128))
    out = _skopeo_login(skopeo, "alice", reg.passwords["alice"]).stdout
    assert "Login Succeeded" in out, out

    for repo in (f"alice/{_name('app')}", f"web/{_name('site')}"):
        skopeo("copy", "--dest-tls-verify=false", f"oci:{src.path}:v1", skopeo.ref(repo, "v1"))
        got = skopeo.inspect(skopeo.ref(repo, "v1"))
        assert got["Digest"] == desc["digest"], (repo, got)

    # Into another user's namespace: refused, and the client says so.
    denied = f"bob/{_name('app')}"
    proc = run_expect_failure(["skopeo", "--policy", skopeo.env["E2E_POLICY"], "copy",
                               "--dest-tls-verify=false", f"oci:{src.path}:v1",
                               skopeo.ref(denied, "v1")], env=skopeo.env)
    _refused(proc)
    # Nothing was created there (the admin looks).
    proc = run_expect_failure(["skopeo", "inspect", "--tls-verify=false", "--no-tags",
                               "--creds", f"admin:{ADMIN_PASSWORD}", skopeo.ref(denied, "v1")],
                              env=skopeo.env)
    assert "manifest unknown" in proc.stderr.lower() or "404" in proc.stderr, proc.stderr

    # Reading someone else's image: refused too.
    bob_repo = f"bob/{_name('private')}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"bob:{reg.passwords['bob']}",
           f"oci:{src.path}:v1", skopeo.ref(bob_repo, "v1"))
    proc = run_expect_failure(["skopeo", "inspect", "--tls-verify=false", "--no-tags",
                               skopeo.ref(bob_repo, "v1")], env=skopeo.env)
    _refused(proc)

    # Logged out: asked for credentials.
    run(["skopeo", "logout", skopeo.registry], env=skopeo.env)
    proc = run_expect_failure(["skopeo", "inspect", "--tls-verify=false", "--no-tags",
                               skopeo.ref(f"alice/{_name('app')}", "v1")], env=skopeo.env)
    low = proc.stderr.lower()
    assert "401" in proc.stderr or "unauthorized" in low or "authentication required" in low, \
        proc.stderr


def test_skopeo_login_with_a_wrong_password_is_refused(auth_registry, auth_skopeo):
    proc = _skopeo_login(auth_skopeo, "alice", "not-the-password", check=False)
    assert proc.returncode != 0, proc.stdout
    low = proc.stderr.lower()
    assert "invalid username/password" in low or "unauthorized" in low, proc.stderr


def test_skopeo_login_with_an_access_token_as_the_password(auth_registry, auth_skopeo, tmp_path):
    reg, skopeo = auth_registry, auth_skopeo
    token = reg.create_token("alice", _name("ci"))
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=1, layer_kib=(64,))
    out = _skopeo_login(skopeo, "alice", token).stdout
    assert "Login Succeeded" in out, out
    repo = f"alice/{_name('ci')}"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{src.path}:v1", skopeo.ref(repo, "v1"))
    assert skopeo.inspect(skopeo.ref(repo, "v1"))["Digest"] == desc["digest"]
    proc = run_expect_failure(["skopeo", "--policy", skopeo.env["E2E_POLICY"], "copy",
                               "--dest-tls-verify=false", f"oci:{src.path}:v1",
                               skopeo.ref(f"bob/{_name('ci')}", "v1")], env=skopeo.env)
    _refused(proc)


# --------------------------------------------------------------------------------------
# podman
# --------------------------------------------------------------------------------------


def test_podman_login_push_and_pull(auth_registry, auth_podman, tmp_path):
    reg, podman = auth_registry, auth_podman
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=2, layer_kib=(64, 128))
    out = run(["podman", *podman.global_args, "login", "--tls-verify=false", "--username",
               "alice", "--password-stdin", reg.host], env=podman.env,
              input=reg.passwords["alice"] + "\n").stdout
    assert "Login Succeeded" in out, out

    image_id = podman("pull", f"oci:{src.path}:v1").stdout.split()[-1]
    target = f"{reg.host}/alice/{_name('pm')}:v1"
    podman("tag", image_id, target)
    podman("push", "--tls-verify=false", target)
    podman("rmi", "--force", target, image_id)
    pulled = podman("pull", "--tls-verify=false", target).stdout.split()[-1]
    assert pulled == image_id

    # Into another user's namespace: refused with a clear message.
    other = f"{reg.host}/bob/{_name('pm')}:v1"
    podman("tag", image_id, other)
    proc = podman("push", "--tls-verify=false", other, check=False)
    assert proc.returncode != 0, proc.stdout
    _refused(proc)

    # After logout, the pull asks for credentials.
    podman("logout", reg.host)
    podman("rmi", "--force", target, other, check=False)
    proc = podman("pull", "--tls-verify=false", target, check=False)
    assert proc.returncode != 0, proc.stdout
    low = proc.stderr.lower()
    assert "401" in proc.stderr or "unauthorized" in low or "authentication required" in low, \
        proc.stderr


# --------------------------------------------------------------------------------------
# oras (Python)
# --------------------------------------------------------------------------------------


def _oras(registry: AuthRegistry, monkeypatch, backend: str):
    try:
        import oras.client
        import oras.decorator
    except ImportError:
        missing("the oras Python package", "`import oras` failed")
    real_sleep = time.sleep
    monkeypatch.setattr(oras.decorator.time, "sleep", lambda s: real_sleep(min(s, 0.2)))
    client = oras.client.OrasClient(hostname=registry.host, insecure=True, auth_backend=backend)
    client.session.trust_env = False
    return client


def test_oras_push_and_pull_with_username_and_password(auth_registry, tmp_path, monkeypatch):
    """oras-py with `auth_backend="basic"`: HTTP Basic on /v2 with a username and password.

    (oras-py 0.2.43's default token backend cannot push to a registry that answers a token
    lacking `push` with 401 `insufficient_scope`, as the distribution spec's token flow
    does: it caches the first, pull-only token and sends it again instead of asking for a
    new scope. Its pulls work; see the next test.)"""
    reg = auth_registry
    client = _oras(reg, monkeypatch, "basic")
    status = client.login(username="alice", password=reg.passwords["alice"], hostname=reg.host,
                          config_path=str(tmp_path / "docker-config.json"))
    assert "Succeeded" in str(status), status

    work = tmp_path / "work"
    work.mkdir()
    payload = os.urandom(200 * 1024)
    (work / "data.bin").write_bytes(payload)
    monkeypatch.chdir(work)
    target = f"{reg.host}/alice/{_name('artifact')}:v1"
    resp = client.push(target=target, files=["data.bin:application/vnd.berth.e2e.data"])
    assert resp.status_code == 201, (resp.status_code, resp.text)
    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(f).read_bytes() for f in files] == [payload]

    with pytest.raises(Exception) as err:
        client.push(target=f"{reg.host}/bob/{_name('artifact')}:v1",
                    files=["data.bin:application/vnd.berth.e2e.data"])
    assert "DENIED" in str(err.value), err.value


def test_oras_pulls_through_the_token_flow(auth_registry, tmp_path, monkeypatch):
    """oras-py's default backend: the Docker token flow (/auth/token with Basic)."""
    reg = auth_registry
    pusher = _oras(reg, monkeypatch, "basic")
    pusher.login(username="alice", password=reg.passwords["alice"], hostname=reg.host,
                 config_path=str(tmp_path / "pusher.json"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_bytes(b"pulled with a bearer token\n")
    monkeypatch.chdir(work)
    target = f"{reg.host}/web/{_name('notes')}:v1"
    assert pusher.push(target=target, files=["notes.txt"]).status_code == 201

    client = _oras(reg, monkeypatch, "token")
    client.login(username="alice", password=reg.passwords["alice"], hostname=reg.host,
                 config_path=str(tmp_path / "token.json"))
    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(f).read_bytes() for f in files] == [b"pulled with a bearer token\n"]
    assert client.auth.token, "oras-py did not go through /auth/token"

    bob = _oras(reg, monkeypatch, "token")
    bob.login(username="bob", password=reg.passwords["bob"], hostname=reg.host,
              config_path=str(tmp_path / "bob.json"))
    with pytest.raises(Exception):
        bob.pull(target=target, outdir=str(tmp_path / "bob-out"))


# --------------------------------------------------------------------------------------
# docker (the CLI only: no engine runs here)
# --------------------------------------------------------------------------------------


def _docker_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update({
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "HOME": str(tmp_path),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    # No engine: make sure the CLI does not find one somewhere else either.
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONTEXT", None)
    return env


def test_docker_login_without_an_engine_and_its_credentials_work(
        auth_registry, auth_skopeo, tmp_path):
    """`docker login` checks the credentials itself (GET /v2/ with the token flow) when no
    engine answers, and stores them in $DOCKER_CONFIG/config.json; 127.0.0.1 is an
    insecure registry by default, so it falls back from HTTPS to plain HTTP."""
    docker = require_binary("docker")
    reg = auth_registry
    env = _docker_env(tmp_path)
    proc = run([docker, "login", "--username", "alice", "--password-stdin", reg.host],
               env=env, input=reg.passwords["alice"] + "\n", timeout=60)
    assert "Login Succeeded" in proc.stdout, proc.stdout + proc.stderr
    config = json.loads((tmp_path / "docker-config" / "config.json").read_text())
    stored = base64.b64decode(config["auths"][reg.host]["auth"]).decode()
    assert stored == f"alice:{reg.passwords['alice']}"

    # The stored credentials work for a push with another client reading Docker's file.
    src, desc, _ = new_image_layout(tmp_path / "src", "v1", layers=1, layer_kib=(64,))
    repo = f"alice/{_name('docker')}"
    authfile = str(tmp_path / "docker-config" / "config.json")
    auth_skopeo("copy", "--dest-tls-verify=false", "--dest-authfile", authfile,
                f"oci:{src.path}:v1", auth_skopeo.ref(repo, "v1"))
    got = auth_skopeo.inspect(auth_skopeo.ref(repo, "v1"), "--authfile", authfile)
    assert got["Digest"] == desc["digest"]

    # An access token as the password.
    token = reg.create_token("alice", _name("docker"))
    env2 = _docker_env(tmp_path / "second")
    proc = run([docker, "login", "--username", "alice", "--password-stdin", reg.host],
               env=env2, input=token + "\n", timeout=60)
    assert "Login Succeeded" in proc.stdout, proc.stdout + proc.stderr

    # A wrong password: refused, and docker says why.
    env3 = _docker_env(tmp_path / "third")
    proc = run([docker, "login", "--username", "alice", "--password-stdin", reg.host],
               env=env3, input="not-the-password\n", timeout=60, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "unauthorized" in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    assert not (tmp_path / "third" / "docker-config" / "config.json").exists() or \
        reg.host not in (tmp_path / "third" / "docker-config" / "config.json").read_text()
