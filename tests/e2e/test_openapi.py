"""End-to-end: Schemathesis against the management API's OpenAPI document (issue 10).

Schemathesis (PyPI) generates requests from /api/v1/openapi.json — valid ones, and
invalid ones from the schema's edges (wrong types, out-of-range numbers, missing and
extra fields, odd strings) — and checks every answer: no 5xx, every status code and
body documented, valid requests accepted, invalid ones refused. It runs as an admin with
a bearer token against a Berth of its own (test_auth's fixture), so that it can reach
every operation. Two things are left out on purpose:
- the `ignored_auth` check, which sends wrong credentials: the sign-in throttle then
  (correctly) answers 429 to everything from this address, which would only test the
  throttle (tested in tests/integration/auth.rs);
- the stateful phase, which chains operations and would sooner or later delete or
  re-password its own admin account.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.request

import pytest

from conftest import _OPENER, missing
from helpers import run
from test_auth import ADMIN_PASSWORD, auth_registry  # noqa: F401 (module fixture)

EXAMPLES = int(os.environ.get("BERTH_SCHEMATHESIS_EXAMPLES", "30"))


def test_the_management_api_matches_its_openapi_document(auth_registry, tmp_path):  # noqa: F811
    st = shutil.which("schemathesis") or shutil.which("st")
    if not st:
        missing("schemathesis", "pip package schemathesis")
    host = auth_registry.host
    if auth_registry.replicas is not None:
        # nginx answers TRACE itself (405, an HTML body): talk to one replica directly.
        host = auth_registry.replicas.replicas[0].host
    req = urllib.request.Request(f"http://{host}/auth/token?service=berth")
    req.add_header("Authorization", "Basic " + base64.b64encode(
        f"admin:{ADMIN_PASSWORD}".encode()).decode())
    with _OPENER.open(req, timeout=10) as r:
        token = json.load(r)["token"]
    proc = run([st, "run", f"http://{host}/api/v1/openapi.json",
                "-H", f"Authorization: Bearer {token}",
                "--checks", "all", "--exclude-checks", "ignored_auth",
                "--phases", "examples,coverage,fuzzing",
                "-n", str(EXAMPLES), "--workers", "1", "--no-color"],
               check=False, timeout=600, env=dict(os.environ, NO_COLOR="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"schemathesis found problems:\n{out[-20000:]}"
    assert re.search(r"\d+ generated, \d+ passed", out), out[-3000:]
