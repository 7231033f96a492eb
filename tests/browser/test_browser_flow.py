"""A person in real headless Chromium: connect Capsule through the local stack's pages.

Drives Debian's Chromium (``apt-get install chromium``) with Playwright, never a browser
that Playwright downloads. Screenshots of every page land in ``tests/artifacts/browser``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Cookie,
    Locator,
    Page,
    Request,
    sync_playwright,
)

from capsule_oauth import owners
from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"
BINDING_COOKIE = "__Secure-capsule_oauth_binding"
TIMEOUT_MS = 15_000
# No network on CI and root in a container: no sandbox, no QUIC, nothing phoning home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
WHEN = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC \(")

Shoot = Callable[[Page, str], Path]


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    fallback = Path("/usr/bin/chromium")
    return str(fallback) if fallback.exists() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium not found: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile per test: no cookie from one test reaches another."""
    fresh = browser.new_context(viewport={"width": 1100, "height": 800}, locale="en-GB")
    fresh.set_default_timeout(TIMEOUT_MS)
    fresh.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        yield fresh
    finally:
        fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Shoot:
    """Save a full-page screenshot as tests/artifacts/browser/<test>-<step>.png."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    for stale in ARTIFACTS.glob(f"{name}-*.png"):  # only this run's pages, none from before
        stale.unlink()

    def save(page: Page, step: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def heading(page: Page) -> str:
    return page.locator("h1").inner_text().strip()


def connections(stack: RunningDeployment) -> dict[str, dict[str, Any]]:
    listed: list[dict[str, Any]] = requests.get(
        f"{stack.url}/_local/connections", timeout=10
    ).json()
    return {c["connection_id"]: c for c in listed}


def binding_cookies(context: BrowserContext) -> list[Cookie]:
    return [c for c in context.cookies() if c.get("name", "").startswith(BINDING_COOKIE)]


def connection_row(page: Page, connection_id: str) -> Locator:
    return page.locator("#connections tbody tr").filter(has_text=connection_id)


def sign_in_at_capsule(
    page: Page,
    stack: RunningDeployment,
    shoot: Shoot,
    *,
    subdomain: str,
    username: str,
    site_name: str,
    pick_from_list: bool,
    owner: str = "anonymous",
    confirm_as_other: bool = False,
) -> None:
    """From the landing page (the app) to Capsule's consent page, as a person clicks through
    it: the app creates a connect session for ``owner`` and sends the browser to its link."""
    page.goto(stack.url)
    assert heading(page) == "Capsule CRM connector — local stack"
    page.locator("#owner").fill(owner)
    if confirm_as_other:
        page.locator("#confirm-as-other").check()
    shoot(page, "1-landing")

    page.get_by_role("button", name="Connect Capsule CRM").click()
    page.wait_for_url(f"{stack.capsule_url}/oauth/authorise?*")
    assert heading(page) == "Choose your Capsule account"
    shoot(page, "2-account-picker")

    if pick_from_list:
        page.locator(f"#account-{subdomain}").click()
    else:
        page.locator("#subdomain").fill(subdomain)
        page.locator("#continue").click()
    page.locator("#username").wait_for()
    assert heading(page) == f"Log in to {site_name}"
    page.locator("#username").fill(username)
    page.locator("#password").fill("capsule")
    shoot(page, "3-login")

    page.locator("#login").click()
    page.locator("#allow").wait_for()
    assert site_name in heading(page)
    shoot(page, "4-consent")


def test_a_person_connects_capsule_and_refreshes_it(
    page: Page, context: BrowserContext, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    sign_in_at_capsule(
        page,
        local_deployment,
        shoot,
        subdomain="exampleco",
        username="scott",
        site_name="Example Co.",
        pick_from_list=True,
        owner="demo-user-1",
    )
    connection_id = owners.connection_id_for("demo-user-1", "exampleco", "1")
    # Start set the binding cookie over plain http://localhost, Secure as it is: Chromium
    # treats localhost as a secure context and keeps it, scoped to the callback.
    (cookie,) = binding_cookies(context)
    assert cookie.get("secure") is True
    assert cookie.get("httpOnly") is True
    assert cookie.get("sameSite") == "Lax"
    assert cookie.get("path") == "/auth/callback"

    page.locator("#allow").click()
    page.wait_for_url(f"{local_deployment.url}/?owner=*capsule_*")
    # Only the browser's cookie proves this browser started the sign-in: success is the
    # round trip working, cross-site redirect from Capsule included, back in the app.
    assert heading(page) == "Capsule CRM connector — local stack"
    assert page.get_by_test_id("capsule_status").inner_text() == "connected"
    assert page.get_by_test_id("capsule_connection_id").inner_text() == connection_id
    assert "code=" not in page.url
    # The app's return handler confirmed the new connection for its signed-in user.
    assert page.get_by_test_id("confirm-status").inner_text() == "200"
    shoot(page, "5-success-back-in-the-app")
    # Kept, scoped to the callback: it recognises this browser if it comes back there.
    assert [c.get("path") for c in binding_cookies(context)] == ["/auth/callback"]

    before = connections(local_deployment)[connection_id]
    row = connection_row(page, connection_id)
    assert row.count() == 1
    assert row.get_by_test_id("status").inner_text() == "active"
    assert WHEN.match(row.get_by_test_id("expires").inner_text())
    assert "Scott Spacey" in row.inner_text()
    assert row.get_by_test_id("owner").inner_text() == "demo-user-1"
    shoot(page, "6-landing-connected")

    row.get_by_role("button", name="Refresh now").click()
    page.wait_for_url(f"{local_deployment.url}/?done=refreshed*")
    assert page.locator("#flash").inner_text().startswith(f"Refreshed {connection_id}")
    row = connection_row(page, connection_id)
    last_refresh = row.get_by_test_id("last-refresh").inner_text()
    assert last_refresh != "never"
    assert WHEN.match(last_refresh)
    assert row.get_by_test_id("status").inner_text() == "active"
    shoot(page, "7-after-refresh")
    after = connections(local_deployment)[connection_id]
    assert after["version"] == before["version"] + 1


def test_a_person_who_denies_access_connects_nothing(
    page: Page, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    before = connections(local_deployment).get("acme:7")  # other tests share this stack
    sign_in_at_capsule(
        page,
        local_deployment,
        shoot,
        subdomain="acme",
        username="ada",
        site_name="Acme Ltd",
        pick_from_list=False,
    )

    page.locator("#deny").click()
    page.wait_for_url(f"{local_deployment.url}/?owner=*capsule_*")
    assert page.get_by_test_id("capsule_status").inner_text() == "denied"
    again = page.get_by_role("button", name="Connect Capsule CRM")
    assert again.is_visible()
    shoot(page, "5-denied-back-in-the-app")
    assert connections(local_deployment).get("acme:7") == before

    # The way back works: it starts a new sign-in at Capsule.
    again.click()
    page.wait_for_url(f"{local_deployment.capsule_url}/oauth/authorise?*")
    assert heading(page) == "Choose your Capsule account"


@dataclass
class Seen:
    """What a page did while it loaded, as Playwright reports it."""

    requests: list[Request] = field(default_factory=list)
    failed: list[Request] = field(default_factory=list)
    console: list[ConsoleMessage] = field(default_factory=list)

    def watch(self, page: Page) -> Seen:
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("console", self._console)
        return self

    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _failed(self, request: Request) -> None:
        self.failed.append(request)

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(message)


# Who opens the completed callback again -> (the connector's page title, its status, the
# title's colour): the browser that completed it, or another one.
OUTCOMES = {
    "same": ("Already connected to Example Co. as Scott Spacey", 200, "rgb(31, 122, 63)"),
    "other": ("This sign-in was already completed", 400, "rgb(168, 50, 30)"),
}


@pytest.mark.parametrize("browser_of", ["same", "other"], ids=["success-page", "refused-page"])
def test_the_connector_pages_are_self_contained(
    page: Page,
    browser: Browser,
    local_deployment: RunningDeployment,
    shoot: Shoot,
    browser_of: str,
) -> None:
    title, status, colour = OUTCOMES[browser_of]
    sign_in_at_capsule(
        page,
        local_deployment,
        shoot,
        subdomain="exampleco",
        username="scott",
        site_name="Example Co.",
        pick_from_list=True,
    )
    callback = f"{local_deployment.url}/auth/callback"
    with page.expect_request(lambda r: r.url.startswith(callback)) as sent:
        page.locator("#allow").click()
    page.wait_for_url(f"{local_deployment.url}/?owner=*capsule_*")
    if browser_of == "other":  # a fresh profile: no cookie of this sign-in
        page = browser.new_context().new_page()
    seen = Seen().watch(page)

    response = page.goto(sent.value.url)  # the completed callback, opened again
    assert response is not None
    page.wait_for_load_state("load")
    assert heading(page) == title
    shoot(page, f"5-{browser_of}")

    assert response.status == status
    # Everything from the callback on (the page and anything it loads) stays on the gateway.
    loaded = [r.url for r in seen.requests]
    first = next(i for i, url in enumerate(loaded) if url.startswith(callback))
    assert {origin(url) for url in loaded[first:]} == {origin(local_deployment.url)}, loaded[first:]
    assert seen.failed == [], [r.url for r in seen.failed]
    # A blocked style or script would be a CSP violation on the console. (Chromium also
    # logs the 403 of the denied page itself: that one is expected.)
    own_status = f"the server responded with a status of {status} "
    complaints = [
        m.text for m in seen.console if m.type in {"error", "warning"} and own_status not in m.text
    ]
    assert complaints == []
    # ...and the page's own style did apply under its CSP (the title is coloured by it).
    assert page.locator("h1").evaluate("e => getComputedStyle(e).color") == colour

    headers = response.all_headers()
    policy = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert headers.get("referrer-policy") == "no-referrer"
    assert headers.get("x-frame-options") == "DENY"
    assert "no-store" in headers.get("cache-control", "")


# --- a sign-in with no dead ends ---------------------------------------------------------------


def follow_every_link(page: Page, shoot: Shoot, step: str) -> list[str]:
    """Open each link of the page in turn, in this browser: every one answers below 400.
    The pages they lead to, by title."""
    here = page.url
    hrefs = [a.get_attribute("href") or "" for a in page.locator("a").all()]
    assert hrefs, "a page with no way forward"
    reached = []
    for number, href in enumerate(hrefs):
        page.goto(here)
        link = page.locator("a").nth(number)
        with page.expect_navigation() as navigated:
            link.click()
        response = navigated.value
        assert response is not None, href
        assert response.status < 400, (href, response.status)
        page.wait_for_load_state("load")
        shoot(page, f"{step}-link-{number}")
        reached.append(heading(page))
    return reached


def test_reload_after_success_and_back_then_allow_again_say_already_connected(
    page: Page, context: BrowserContext, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    sign_in_at_capsule(
        page, local_deployment, shoot, subdomain="exampleco", username="scott",
        site_name="Example Co.", pick_from_list=True, owner="journey-reload",
    )  # fmt: skip
    callback = f"{local_deployment.url}/auth/callback"
    with page.expect_request(lambda r: r.url.startswith(callback)) as sent:
        page.locator("#allow").click()
    page.wait_for_url(f"{local_deployment.url}/?owner=*capsule_*")
    assert page.get_by_test_id("confirm-status").inner_text() == "200"
    back_in_app = page.url
    before = connections(local_deployment)

    # Reload of the callback (its URL still holds code and state).
    page.goto(sent.value.url)
    assert heading(page) == "Already connected to Example Co. as Scott Spacey"
    shoot(page, "5-reloaded")
    (back,) = page.locator("a").all()
    assert back.inner_text() == "Back to the app"  # the return URL is a path on the API
    assert "capsule_result=" in (back.get_attribute("href") or "")  # the same way back
    assert follow_every_link(page, shoot, "6") == ["Capsule CRM connector — local stack"]

    # Back to Capsule's consent page (no form to resubmit: post/redirect/get), Allow again.
    page.goto(back_in_app)
    page.go_back()  # the reloaded callback
    page.go_back()  # the app
    page.go_back()  # Capsule's consent page
    page.locator("#allow").wait_for()
    shoot(page, "7-back-at-consent")
    page.locator("#allow").click()
    page.wait_for_load_state("load")
    assert heading(page) == "Already connected to Example Co. as Scott Spacey"
    shoot(page, "8-allowed-again")
    assert connections(local_deployment) == before


def test_a_connect_link_opened_twice_says_it_was_used_and_leads_back(
    page: Page, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    with page.expect_request(lambda r: "/auth/start?session=" in r.url) as started:
        sign_in_at_capsule(
            page, local_deployment, shoot, subdomain="exampleco", username="scott",
            site_name="Example Co.", pick_from_list=True, owner="journey-twice",
        )  # fmt: skip
    page.locator("#allow").click()
    page.wait_for_url(f"{local_deployment.url}/?owner=*capsule_*")

    page.goto(started.value.url)  # the same connect link, opened again

    assert heading(page) == "This link cannot start a connection"
    assert "This connect link was already used" in page.locator("main").inner_text()
    shoot(page, "5-link-used")
    assert follow_every_link(page, shoot, "6") == ["Capsule CRM connector — local stack"]
    assert page.get_by_test_id("capsule_status").inner_text() == "error"


def test_an_expired_sign_in_says_it_took_too_long_and_leads_back(
    page: Page, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    sign_in_at_capsule(
        page, local_deployment, shoot, subdomain="acme", username="ada",
        site_name="Acme Ltd", pick_from_list=True, owner="journey-expired",
    )  # fmt: skip
    described = requests.get(f"{local_deployment.url}/_local/stack", timeout=10).json()
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=described["aws_endpoint"], region_name="us-east-1",
        aws_access_key_id="local", aws_secret_access_key="local",
    )  # fmt: skip
    table = described["physical"]["StateTable"]
    for item in dynamodb.scan(TableName=table)["Items"]:  # this sign-in's state: out of time
        if item["state"]["S"].startswith("state#") and "used_at" not in item:
            dynamodb.update_item(
                TableName=table, Key={"state": item["state"]},
                UpdateExpression="SET expires_at = :past",
                ExpressionAttributeValues={":past": {"N": "1"}},
            )  # fmt: skip

    page.locator("#allow").click()
    page.wait_for_load_state("load")

    assert heading(page) == "This sign-in took too long"
    shoot(page, "5-expired")
    assert follow_every_link(page, shoot, "6") == ["Capsule CRM connector — local stack"]


def test_capsule_failing_offers_try_again_that_works_and_a_way_back(
    page: Page, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    sign_in_at_capsule(
        page, local_deployment, shoot, subdomain="acme", username="ada",
        site_name="Acme Ltd", pick_from_list=True, owner="journey-retry",
    )  # fmt: skip
    requests.post(
        f"{local_deployment.capsule_url}/_emulator/faults",
        json={"kind": "status", "target": "token", "status": 503},
        timeout=5,
    )
    try:
        page.locator("#allow").click()
        page.wait_for_load_state("load")
    finally:
        requests.delete(f"{local_deployment.capsule_url}/_emulator/faults", timeout=5)

    assert heading(page) == "Capsule is unavailable"
    shoot(page, "5-capsule-failed")
    reached = follow_every_link(page, shoot, "6")
    # "Try again" re-opens the same connect session at Capsule; the other goes back.
    assert reached == ["Choose your Capsule account", "Capsule CRM connector — local stack"]


def test_a_missing_cookie_says_so_and_leads_back(
    page: Page, context: BrowserContext, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    sign_in_at_capsule(
        page, local_deployment, shoot, subdomain="acme", username="ada",
        site_name="Acme Ltd", pick_from_list=True, owner="journey-cookie",
    )  # fmt: skip
    context.clear_cookies()  # as a browser that blocks them, or another one

    page.locator("#allow").click()
    page.wait_for_load_state("load")

    assert heading(page) == "This browser's sign-in cookie is missing"
    assert "cookies are blocked" in page.locator("main").inner_text()
    shoot(page, "5-no-cookie")
    assert follow_every_link(page, shoot, "6") == ["Capsule CRM connector — local stack"]


def test_the_landing_page_says_what_each_button_did_and_keeps_the_owner(
    browser: Browser, local_deployment: RunningDeployment, shoot: Shoot
) -> None:
    """At 1280 px, as a laptop shows it: nothing overflows the card, every request (the
    favicon too) is answered, Refresh and Disconnect each say what they did."""
    wide = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    wide.set_default_timeout(TIMEOUT_MS)
    page = wide.new_page()
    seen = Seen().watch(page)
    try:
        sign_in_at_capsule(
            page,
            local_deployment,
            shoot,
            subdomain="acme",
            username="ada",
            site_name="Acme Ltd",
            pick_from_list=False,
            owner="owner-kept-7",
        )
        page.locator("#allow").click()
        page.wait_for_url(f"{local_deployment.url}/?owner=*capsule_*")
        assert page.locator("#owner").input_value() == "owner-kept-7"
        connection_id = page.get_by_test_id("capsule_connection_id").inner_text()
        row = connection_row(page, connection_id)
        shoot(page, "1-connected-1280px")
        overflowing = page.evaluate(
            """() => {
                const card = document.querySelector('main').getBoundingClientRect();
                return [...document.querySelectorAll('main *')]
                    .filter(e => e.getBoundingClientRect().right > card.right + 0.5)
                    .map(e => e.outerHTML.slice(0, 80));
            }"""
        )
        assert overflowing == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280

        row.get_by_role("button", name="Refresh now").click()
        page.wait_for_url(f"{local_deployment.url}/?done=refreshed*")
        refreshed = page.locator("#flash").inner_text()
        assert page.locator("#owner").input_value() == "owner-kept-7"

        connection_row(page, connection_id).get_by_role("button", name="Disconnect").click()
        page.wait_for_url(f"{local_deployment.url}/?done=disconnected*")
        disconnected = page.locator("#flash").inner_text()
        row = connection_row(page, connection_id)
        shoot(page, "2-disconnected-1280px")

        assert refreshed.startswith(f"Refreshed {connection_id}")
        assert disconnected.startswith(f"Disconnected {connection_id}")
        assert refreshed != disconnected
        assert row.get_by_test_id("status").inner_text() == "disconnected"
        assert row.get_by_test_id("expires").inner_text() == "—"
        assert page.locator("#owner").input_value() == "owner-kept-7"
        answered = [(r.url, r.response()) for r in seen.requests]
        assert [url for url, answer in answered if answer and answer.status == 404] == []
        # Headless Chromium asks for no icon; a browser with a window asks every page's.
        icon = page.evaluate("document.querySelector('link[rel=icon]').href")
        assert icon == f"{local_deployment.url}/favicon.ico"
        served = requests.get(icon, timeout=10)
        assert (served.status_code, served.headers["Content-Type"]) == (200, "image/svg+xml")
    finally:
        wide.close()
