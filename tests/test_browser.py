"""The creator pages in a real headless Chromium against a live server: sign up,
confirm, log in, upload photos, file and withdraw an opt-out; then the same
forms on a phone-sized screen with JavaScript turned off; and an operator
opening the dashboard from the admin.

Each page visited is saved to docs/screenshots/<name>.png (overwritten on every
run) so the pages can be looked at without starting the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from optout.models import Batch, EngineState, OptOut
from registry.models import ConsentEvent, Creator, Photo
from tests import factories
from tests.images import jpeg_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMAIL = "robin@example.org"
PASSWORD = "a long and private passphrase 31"
CONFIRM_LINK = re.compile(r"https?://[^/\s]+(/accounts/confirm/[^/\s]+/[^/\s]+/)")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # The sync Playwright API runs an event loop in this thread; the test still
    # reads the database directly, which Django allows once told so.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def confirmation_path() -> str:
    confirmations = [m for m in mail.outbox if m.subject.startswith("Confirm your email")]
    assert len(confirmations) == 1
    assert confirmations[0].to == [EMAIL]
    link = CONFIRM_LINK.search(confirmations[0].body)
    assert link is not None
    return link.group(1)


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()


def test_creator_signs_up_registers_photos_and_files_and_withdraws_an_opt_out(
    browser: Browser, live_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    try:
        desktop_journey(browser, live_server.url, tmp_path)
        phone_journey_without_javascript(browser, live_server.url)
    finally:
        # The queries this test makes while Playwright's event loop runs open a
        # connection of their own (Django keeps connections per context), which
        # pytest-django does not know about; left open, it stops the test
        # database from being dropped at the end of the session.
        connections.close_all()


def desktop_journey(browser: Browser, base: str, tmp_path: Path) -> None:
    good_a, good_b = tmp_path / "beach.jpg", tmp_path / "forest.jpg"
    good_a.write_bytes(jpeg_bytes(101))
    good_b.write_bytes(jpeg_bytes(102))
    text_file = tmp_path / "notes.txt"
    text_file.write_bytes(b"a shopping list, not a photo")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg_bytes(103)[:2_000])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)

    # Home and sign up.
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Keep your photos out of AI training")).to_be_visible()
    shot(page, "home")
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    shot(page, "signup")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    assert Creator.objects.get(user__username=EMAIL).email_confirmed_at is None

    # Logging in before confirming is refused with a way to get a new link.
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Confirm your email address first")).to_be_visible()
    expect(page.get_by_role("button", name="Resend confirmation")).to_be_visible()

    # Confirm from the emailed link: confirmed and logged in.
    page.goto(f"{base}{confirmation_path()}")
    expect(page.get_by_text("your email address is confirmed")).to_be_visible()
    assert Creator.objects.get(user__username=EMAIL).email_confirmed_at is not None

    # Log out and in again.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("navigation").get_by_role("link", name="Log in")).to_be_visible()
    # This time with the keyboard alone: the password follows the email in tab
    # order, and Enter submits the form.
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Email").focus()
    page.keyboard.type(EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    expect(page.get_by_label("Password")).to_have_value(PASSWORD)
    shot(page, "login")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()
    shot(page, "dashboard")

    # Upload two photos, a text file and a truncated JPEG at once.
    nav(page, "Photos").click()
    page.get_by_label("Photos or ZIP archives").set_input_files(
        [good_a, good_b, text_file, truncated]
    )
    page.get_by_role("button", name="Upload and register").click()
    results = page.get_by_role("region", name="Upload results")
    expect(results).to_contain_text("4 files: 2 registered, 0 already registered, 2 rejected.")
    rows = results.locator("tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.nth(0)).to_contain_text("beach.jpg")
    expect(rows.nth(0)).to_contain_text("registered")
    expect(rows.nth(2)).to_contain_text("not an image")
    expect(rows.nth(3)).to_contain_text("truncated")
    expect(page.get_by_role("heading", name="Registered photos (2)")).to_be_visible()
    shot(page, "photos-upload-outcomes")
    assert sorted(Photo.objects.values_list("original_filename", flat=True)) == [
        "beach.jpg",
        "forest.jpg",
    ]

    # A claim.
    nav(page, "Claims").click()
    page.get_by_label("Kind").select_option("domain")
    page.get_by_label("Value").fill("https://www.robin-photo.example/")
    page.get_by_role("button", name="Add claim").click()
    expect(page.get_by_text("Claim added: domain robin-photo.example")).to_be_visible()
    shot(page, "claims")

    # File an opt-out.
    nav(page, "Opt-outs").click()
    page.get_by_label("AI training (includes generative AI training)").check()
    page.get_by_label("Data mining").check()
    page.get_by_label("all my photos, including future ones").check()
    expect(page.get_by_text("privacy notice version 2026-11")).to_be_visible()
    shot(page, "opt-outs-form")
    page.get_by_role("button", name="File opt-out").click()
    expect(page.get_by_text("Opt-out filed")).to_be_visible()
    opt_out = OptOut.objects.get()
    assert (opt_out.uses, opt_out.scope, opt_out.withdrawn_at) == (
        ["data_mining", "ai_training"],
        "all_photos",
        None,
    )

    # Change it: the filing form, prefilled; data mining allowed again.
    page.get_by_role("link", name=re.compile("^Change the opt-out")).click()
    expect(page.get_by_label("Data mining")).to_be_checked()
    page.get_by_label("Data mining").uncheck()
    shot(page, "opt-out-change")
    page.get_by_role("button", name="Change opt-out").click()
    expect(page.get_by_text("changed from an earlier opt-out")).to_be_visible()
    changed = OptOut.objects.get(replaces=opt_out)
    opt_out.refresh_from_db()
    assert (changed.uses, changed.scope, changed.filed_version) == (
        ["ai_training"],
        "all_photos",
        opt_out.withdrawn_version,
    )

    # Withdraw it: one click.
    page.get_by_role("button", name=re.compile("^Withdraw")).click()
    expect(page.get_by_text(re.compile("^Opt-out withdrawn;"))).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Withdraw"))).to_have_count(0)
    shot(page, "opt-outs-withdrawn")
    changed.refresh_from_db()
    assert changed.withdrawn_version is not None

    # Consent history, tokens, delete account.
    nav(page, "Consent history").click()
    history = page.locator("tbody tr")
    expect(history).to_have_count(6)
    expect(history.nth(0)).to_contain_text("opt-out withdrawn")
    expect(history.nth(1)).to_contain_text("opt-out changed: ai_training")
    expect(history.nth(2)).to_contain_text("opt-out filed: data_mining, ai_training")
    shot(page, "consent-history")
    nav(page, "API tokens").click()
    page.get_by_label("Token name").fill("my laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_contain_text("opt_")
    shot(page, "tokens")
    page.goto(f"{base}/me/delete/")
    expect(
        page.get_by_label("Keep my opt-outs in force as anonymous hash-only suppression records")
    ).not_to_be_checked()
    shot(page, "delete-account")
    context.close()


def phone_journey_without_javascript(browser: Browser, base: str) -> None:
    """The same forms on a phone-sized screen, with JavaScript off."""
    phone = browser.new_context(
        java_script_enabled=False, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    page = phone.new_page()
    page.set_default_timeout(20_000)
    log_in(page, base)
    expect(page.get_by_text("2 photos registered")).to_be_visible()
    shot(page, "phone-dashboard")
    page.goto(f"{base}/me/opt-outs/")
    page.get_by_label("AI inference (use as input to a model)").check()
    page.get_by_label("chosen photos", exact=True).check()
    page.get_by_label("forest.jpg").check()
    page.get_by_role("button", name="File opt-out").click()
    expect(page.get_by_text("Opt-out filed")).to_be_visible()
    filed = OptOut.objects.get(withdrawn_at__isnull=True)
    assert (filed.uses, filed.scope) == (["ai_inference"], "photos")
    assert [photo.original_filename for photo in filed.photos.all()] == ["forest.jpg"]
    shot(page, "phone-opt-outs")
    # Nothing wider than the phone's screen: no sideways scrolling to read a page.
    for path in ("/me/", "/me/photos/", "/me/opt-outs/", "/me/consent/"):
        page.goto(f"{base}{path}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    page.goto(f"{base}/me/opt-outs/")
    # Withdrawn from the keyboard: the button takes the focus and Enter presses it.
    page.get_by_role("button", name=re.compile("^Withdraw")).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text(re.compile("^Opt-out withdrawn;"))).to_be_visible()
    assert OptOut.objects.filter(withdrawn_at__isnull=True).count() == 0
    phone.close()


def test_operator_opens_the_dashboard_from_the_admin(browser: Browser, live_server) -> None:  # type: ignore[no-untyped-def]
    get_user_model().objects.create_user(
        username="operator@example.org", password=factories.PASSWORD, is_staff=True
    )
    photos = factories.PhotoFactory.create_batch(3)
    now = timezone.now()
    # Ledger events on a few days of the chart (written directly: the ledger
    # stamps the present).
    for version, days_ago in enumerate([0, 0, 1, 4, 4, 4, 9, 20], start=1):
        ConsentEvent.objects.create(
            registry_version=version,
            kind=ConsentEvent.Kind.PHOTO_REGISTERED,
            creator_public_id=photos[0].creator.public_id,
            actor="creator",
            channel="web",
            notice_version="2026-11",
            created_at=now - timedelta(days=days_ago),
        )
    EngineState.objects.create(
        worker="celery@worker-1:4242", kind="pdq", loaded_version=6, size=3, updated_at=now
    )
    Batch.objects.create(
        organization=factories.OrganizationFactory(name="Example Lab"),
        use="ai_training",
        format=Batch.Format.JSONL,
        manifest_sha256="0" * 64,
        manifest_bytes=1,
        idempotency_key="first",
        request_digest="0" * 64,
        status=Batch.Status.DONE,
        record_count=200,
        excluded_count=50,
        started_at=now - timedelta(seconds=40),
        finished_at=now,
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{live_server.url}/admin/")
        page.get_by_label("Username").fill("operator@example.org")
        page.get_by_label("Password").fill(factories.PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Operator dashboard").click()

        expect(page.get_by_role("heading", name="Operator dashboard", level=1)).to_be_visible()
        expect(page.locator("#figure-photos")).to_contain_text("3photos registered")
        expect(page.locator("#exclusion-rate")).to_contain_text("25.00 %")
        expect(page.locator("#organizations tbody tr")).to_have_count(1)
        expect(page.locator("#organizations tbody tr")).to_contain_text("Example Lab")
        expect(page.get_by_role("img", name=re.compile("^Consent events per day"))).to_be_visible()
        expect(page.locator("#figure-records-per-second")).to_contain_text("5.0")
        expect(page.locator("#engines tbody tr")).to_contain_text("celery@worker-1:4242")
        shot(page, "operator-dashboard")
    finally:
        context.close()
        connections.close_all()
