"""End-to-end: the web UI in headless Chromium (issue 7).

Debian's Chromium (/usr/bin/chromium) is driven by Playwright (the `playwright` package
from PyPI, which carries its own driver; no browser is downloaded). The registry is the
auth-on Berth of test_auth.py (users alice and bob, team web with alice); images are
pushed into it with skopeo before the browser looks.

Every test checks what the UI shows *and* what the registry then says through its API,
so a page that lies fails. Screenshots of the main pages go to tests/e2e/screenshots/
(or $BERTH_UI_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import _OPENER, missing, require_binary
from helpers import Layout, new_image_layout, run
from test_auth import ADMIN_PASSWORD, auth_registry  # noqa: F401 (module fixture)

CHROMIUM = os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]
SHOTS = Path(os.environ.get("BERTH_UI_SCREENSHOTS",
                            Path(__file__).resolve().parent / "screenshots"))


def api(reg, method: str, path: str, user: str = "admin", body: dict | None = None):
    """(status, parsed JSON or None) of a registry/management API call with Basic auth."""
    secret = reg.passwords[user]
    req = urllib.request.Request(f"http://{reg.host}{path}", method=method)
    req.add_header("Authorization",
                   "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode())
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, data=data, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None


@pytest.fixture(scope="module")
def images(auth_registry, tmp_path_factory):  # noqa: F811
    """alice/app:v1 (one platform) and :v2 (linux/amd64 + linux/arm64), bob/secret:v1,
    web/site:latest, pushed with skopeo."""
    require_binary("skopeo")
    reg = auth_registry
    base = tmp_path_factory.mktemp("ui-images")
    src, v1, _ = new_image_layout(base / "src", "v1", layers=2, layer_kib=(32, 64))
    amd, _ = src.add_image(arch="amd64", layers=1, layer_kib=(16,))
    arm, _ = src.add_image(arch="arm64", layers=1, layer_kib=(16,))
    index, _ = src.add_index([(amd, "amd64", "linux"), (arm, "arm64", "linux")])
    src.tag(index, "v2")
    env = dict(os.environ)

    def push(tag: str, user: str, repo: str, all_: bool = False):
        run(["skopeo", "copy", "--dest-tls-verify=false", *(["--all"] if all_ else []),
             "--dest-creds", f"{user}:{reg.passwords[user]}", f"oci:{src.path}:{tag}",
             f"docker://{reg.host}/{repo}"], env=env)

    push("v1", "alice", "alice/app:v1")
    push("v2", "alice", "alice/app:v2", all_=True)
    push("v1", "bob", "bob/secret:v1")
    push("v1", "alice", "web/site:latest")
    return {"v1": v1["digest"], "v2": index["digest"]}


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        missing("chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "pip package playwright")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class UI:
    """A browser context (its own cookies) on the registry."""

    def __init__(self, browser, reg, **ctx):
        self.reg = reg
        self.base = f"http://{reg.host}"
        self.ctx = browser.new_context(base_url=self.base, **ctx)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(10_000)

    def goto(self, path: str):
        return self.page.goto(self.base + path)

    def sign_in(self, user: str):
        self.goto("/")
        assert "/login" in self.page.url, self.page.url
        self.page.get_by_label("User name").fill(user)
        self.page.get_by_label("Password").fill(self.reg.passwords[user])
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.base + "/")
        assert self.page.get_by_test_id("signed-in-as").inner_text() == user
        return self

    def shot(self, name: str):
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def flash(self) -> str:
        return self.page.locator(".flash").first.inner_text()

    def csrf(self) -> str:
        return self.page.locator("input[name=csrf]").first.get_attribute("value")

    def close(self):
        self.ctx.close()


@pytest.fixture
def ui(browser, auth_registry, images):  # noqa: F811
    opened = []

    def open_(user: str | None = None, **ctx) -> UI:
        u = UI(browser, auth_registry, **ctx)
        opened.append(u)
        return u.sign_in(user) if user else u

    yield open_
    for u in opened:
        u.close()


def repo_names(u: UI) -> list[str]:
    return u.page.locator("[data-testid=repositories] a.repo").all_inner_texts()


def test_signing_in_shows_only_the_users_own_and_team_repositories(ui):
    u = ui()
    u.goto("/")
    assert "/login" in u.page.url
    u.shot("sign-in")
    # A wrong password: a message for people, and still on the sign-in page.
    u.page.get_by_label("User name").fill("alice")
    u.page.get_by_label("Password").fill("not-the-password")
    u.page.get_by_role("button", name="Sign in").click()
    assert "do not match" in u.page.locator(".flash.err").inner_text()
    u.close()

    alice = ui("alice")
    names = repo_names(alice)
    assert "alice/app" in names and "web/site" in names, names
    assert not any(n.startswith("bob/") for n in names), names
    alice.shot("images")
    # Search narrows the list.
    alice.page.get_by_role("searchbox").fill("site")
    alice.page.get_by_role("button", name="Search").click()
    assert repo_names(alice) == ["web/site"]
    # The session cookie is HttpOnly and SameSite=Strict.
    cookies = {c["name"]: c for c in alice.ctx.cookies()}
    session = cookies["berth_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict", session

    admin = ui("admin")
    names = repo_names(admin)
    assert {"alice/app", "bob/secret", "web/site"} <= set(names), names


def test_repository_page_shows_tags_platforms_pusher_and_pull_command(ui, images):
    u = ui("alice")
    u.page.get_by_role("link", name="alice/app").click()
    rows = u.page.locator("[data-testid=tags] tbody tr")
    assert rows.count() == 2
    v2 = u.page.locator("tr[data-tag=v2]")
    assert "linux/amd64" in v2.inner_text() and "linux/arm64" in v2.inner_text()
    assert "by alice" in v2.inner_text()
    pull = u.page.locator(".pull code").first.inner_text()
    assert pull.startswith(f"docker pull {u.reg.host}/alice/app:"), pull
    u.shot("repository")

    # The index's page lists its platforms, each linking to its manifest with layers.
    v2.get_by_role("link").first.click()
    assert images["v2"] in u.page.locator("h1").inner_text()
    platforms = u.page.locator("[data-testid=platforms] tbody tr")
    assert platforms.count() == 2
    u.shot("manifest-index")
    platforms.first.get_by_role("link").click()
    assert u.page.locator("[data-testid=layers] tbody tr").count() == 2  # config + 1 layer
    u.shot("manifest")


def test_deleting_a_tag_asks_first_and_the_registry_then_lacks_it(ui, auth_registry):  # noqa: F811
    reg = auth_registry
    run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
         "--src-creds", f"alice:{reg.passwords['alice']}",
         "--dest-creds", f"alice:{reg.passwords['alice']}",
         f"docker://{reg.host}/alice/app:v1", f"docker://{reg.host}/alice/app:old"])
    u = ui("alice")
    u.goto("/repositories/alice/app")
    u.page.locator("tr[data-tag=old]").get_by_role("link", name="Delete tag…").click()
    # The confirmation says what goes and what stays.
    text = u.page.locator("main").inner_text()
    assert "alice/app:old" in text and "its other tags: v1" in text, text
    u.shot("confirm-delete-tag")
    u.page.get_by_role("button", name="Delete tag").click()
    assert "Deleted the tag alice/app:old" in u.flash()
    assert u.page.locator("tr[data-tag=old]").count() == 0
    status, body = api(reg, "GET", "/v2/alice/app/tags/list", user="alice")
    assert status == 200 and "old" not in body["tags"] and "v1" in body["tags"], body


def test_another_users_namespace_is_refused_even_to_forged_posts(ui, auth_registry):  # noqa: F811
    reg = auth_registry
    u = ui("alice")
    resp = u.goto("/repositories/bob/secret")
    assert resp.status == 404
    assert "No repository named" in u.page.locator("main").inner_text()
    resp = u.goto("/repositories/bob/secret/-/delete")
    assert resp.status == 404
    u.goto("/")
    token = u.csrf()
    # A forged form post with alice's valid CSRF token: the access rule still says no.
    r = u.page.request.post(f"{u.base}/repositories/bob/secret/-/delete",
                            form={"csrf": token}, max_redirects=0)
    assert r.status == 404, r.status
    # Without the CSRF token, even on her own repository: refused.
    r = u.page.request.post(f"{u.base}/repositories/alice/app/-/delete",
                            form={"csrf": "forged"}, max_redirects=0)
    assert r.status == 403, r.status
    # Admin pages are for admins.
    assert u.goto("/admin").status == 403
    r = u.page.request.post(f"{u.base}/admin/teams", form={"csrf": token, "name": "evil"},
                            max_redirects=0)
    assert r.status == 403, r.status
    # Nothing changed.
    assert api(reg, "GET", "/v2/bob/secret/tags/list")[0] == 200
    assert api(reg, "GET", "/v2/alice/app/tags/list")[0] == 200
    assert api(reg, "GET", "/api/v1/teams/evil")[0] == 404


def test_admin_sees_storage_and_runs_the_collector(ui):
    u = ui("admin")
    u.page.get_by_role("link", name="Registry").click()
    namespaces = u.page.locator("[data-testid=namespaces]").inner_text()
    for ns in ("alice", "bob", "web"):
        assert ns in namespaces, namespaces
    assert u.page.locator("figure.chart rect.bar").count() >= 3
    # A quota set in the form shows in the table and refuses bob's next push.
    form = u.page.get_by_test_id("quota-form")
    form.get_by_label("Namespace").fill("bob")
    form.get_by_label("Quota").fill("1KiB")
    form.get_by_role("button", name="Set quota").click()
    assert "The quota of bob is 1.0 KiB now" in u.flash()
    row = u.page.locator("[data-testid=namespaces] tr", has_text="bob")
    assert "1.0 KiB" in row.inner_text() and "over" in row.inner_text()
    status, body = api(u.reg, "POST", "/v2/bob/more/blobs/uploads/", user="bob")
    assert status == 403 and "quota exceeded" in body["errors"][0]["message"], body
    u.shot("admin-registry")
    form.get_by_label("Namespace").fill("bob")
    form.get_by_role("button", name="Set quota").click()
    assert "bob has no quota now" in u.flash()
    # A retention rule added in the form is what the API lists; removing it works.
    rule = u.page.get_by_test_id("retention-form")
    rule.get_by_label("Repositories").fill("web/*")
    rule.get_by_label("Tags", exact=True).fill("v*")
    rule.get_by_label("Keep newest tags").fill("3")
    rule.get_by_role("button", name="Add rule").click()
    assert "web/*: keep the newest 3 tags matching v*" in u.flash()
    rules = api(u.reg, "GET", "/api/v1/retention")[1]
    assert [(r["repositories"], r["tags"], r["keep_tags"]) for r in rules] == [("web/*", "v*", 3)]
    u.page.get_by_test_id("retention-rules").get_by_role("button", name="Remove").click()
    assert "Removed the retention rule" in u.flash()
    assert api(u.reg, "GET", "/api/v1/retention")[1] == []
    u.page.get_by_label("Dry run (report only)").check()
    u.page.get_by_role("button", name="Run garbage collection now").click()
    assert "dry run" in u.flash().lower()
    # The run shows up in the history once it finished.
    for _ in range(50):
        runs = u.page.locator("[data-testid=gc-runs]")
        if runs.count() and "done" in runs.inner_text():
            break
        u.page.wait_for_timeout(200)
        u.page.reload()
    assert "dry run" in u.page.locator("[data-testid=gc-runs]").inner_text()


def test_admin_creates_a_team_adds_a_member_and_deletes_it(ui, auth_registry):  # noqa: F811
    reg = auth_registry
    u = ui("admin")
    u.page.get_by_role("link", name="Teams").click()
    u.page.get_by_label("Name").fill("qa")
    u.page.get_by_role("button", name="Create team").click()
    assert "Created the team qa" in u.flash()
    u.page.get_by_label("Add member").fill("bob")
    u.page.get_by_role("button", name="Add").click()
    assert "bob is now a member of qa" in u.flash()
    assert "bob" in u.page.locator("[data-testid=members]").inner_text()
    assert api(reg, "GET", "/api/v1/teams/qa")[1]["members"] == [{"user": "bob", "role": "member"}]
    u.shot("admin-team")
    # bob may now push to qa/…
    status, _ = api(reg, "POST", "/v2/qa/tool/blobs/uploads/", user="bob")
    assert status == 202, status

    u.page.get_by_role("link", name="Delete qa…").click()
    assert "namespace qa/ goes with it" in u.page.locator("main").inner_text()
    u.page.get_by_role("button", name="Delete team and namespace").click()
    assert "Deleted the team qa" in u.flash()
    teams = u.page.locator("[data-testid=teams] a").all_inner_texts()
    assert "qa" not in teams and "web" in teams, teams
    assert api(reg, "GET", "/api/v1/teams/qa")[0] == 404
    u.shot("admin-teams")


def test_admin_adds_a_user_with_a_generated_password_who_can_then_sign_in(ui, auth_registry):  # noqa: F811
    reg = auth_registry
    u = ui("admin")
    u.goto("/admin/users")
    u.page.get_by_label("Name").fill("carol")
    u.page.get_by_role("button", name="Add user").click()
    password = u.page.get_by_test_id("generated-password").inner_text()
    assert len(password) >= 16
    reg.passwords["carol"] = password
    u.shot("admin-users")
    carol = ui("carol")
    assert "No repositories yet" in carol.page.locator("main").inner_text()
    carol.shot("images-empty")


def test_account_page_creates_a_token_that_works_and_revokes_it(ui, auth_registry):  # noqa: F811
    reg = auth_registry
    u = ui("bob")
    u.page.get_by_role("link", name="Account").click()
    u.page.get_by_label("Name").fill("ci")
    u.page.get_by_role("button", name="Create token").click()
    secret = u.page.get_by_test_id("token-secret").inner_text()
    assert secret.startswith("berth_")
    u.shot("account")
    reg.passwords["bob-token"] = secret
    req = urllib.request.Request(f"http://{reg.host}/v2/bob/secret/tags/list")
    req.add_header("Authorization",
                   "Basic " + base64.b64encode(f"bob:{secret}".encode()).decode())
    with _OPENER.open(req, timeout=10) as r:
        assert r.status == 200
    # The secret is not on the page again.
    u.goto("/account")
    assert secret not in u.page.content()
    u.page.locator("[data-testid=tokens] tr", has_text="ci").get_by_role(
        "button", name="Revoke").click()
    assert "Revoked" in u.flash()
    try:
        _OPENER.open(req, timeout=10)
        raise AssertionError("a revoked token still works")
    except urllib.error.HTTPError as e:
        assert e.code == 401


def test_sign_out_ends_the_session(ui):
    u = ui("alice")
    cookie = {c["name"]: c["value"] for c in u.ctx.cookies()}["berth_session"]
    u.page.get_by_role("button", name="Sign out").click()
    assert "/login" in u.page.url
    assert "signed out" in u.flash()
    # The old cookie is dead on the server, not just forgotten by the browser.
    req = urllib.request.Request(f"{u.base}/api/v1/me")
    req.add_header("Cookie", f"berth_session={cookie}")
    try:
        _OPENER.open(req, timeout=10)
        raise AssertionError("a signed-out session still works")
    except urllib.error.HTTPError as e:
        assert e.code == 401


def test_phone_width_and_keyboard_only(ui):
    u = ui(viewport={"width": 390, "height": 844})
    u.goto("/login")
    # Keyboard only: the field has focus, Tab moves on, Enter submits. The page may
    # answer "load" a moment before autofocus lands (a loaded machine): wait for it, or
    # the first keys go nowhere.
    u.page.wait_for_function("document.activeElement?.name === 'username'", timeout=5000)
    u.page.keyboard.type("alice")
    u.page.keyboard.press("Tab")
    u.page.keyboard.type(u.reg.passwords["alice"])
    u.page.keyboard.press("Enter")
    u.page.wait_for_url(u.base + "/")
    u.goto("/repositories/alice/app")
    width = u.page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
    u.shot("phone-repository")


def test_pages_carry_security_headers(ui):
    u = ui("alice")
    resp = u.goto("/")
    h = resp.headers
    assert "default-src 'none'" in h["content-security-policy"]
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    # The page loaded its stylesheet and script under that policy (no inline code).
    assert u.page.evaluate("getComputedStyle(document.body).margin") == "0px"
