"""Creator pages of the registry app, through Django's test client: accounts,
photo uploads with per-file outcomes, hashes files, claims, consent history and
personal tokens."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client, override_settings
from django.utils import timezone
from PIL import Image

from registry.models import Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.services import claim_add, creator_sign_up, token_create, token_digest
from tests.factories import PASSWORD, CreatorFactory, PhotoFactory
from tests.images import jpeg_bytes
from tests.web import hashes_file_posted, signed_in, upload

pytestmark = pytest.mark.django_db

CONFIRM_LINK = re.compile(r"http://testserver(/accounts/confirm/[^/\s]+/[^/\s]+/)")
RESET_LINK = re.compile(r"http://testserver(/accounts/reset/[^/\s]+/[^/\s]+/)")
NEW_PASSWORD = "a brand new passphrase 77"


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def outcomes(response) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(row.filename, row.status) for row in response.context["upload_result"].rows]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- public pages -------------------------------------------------------------


def test_home_page_explains_the_registry_and_links_to_sign_up_and_log_in(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Keep your photos out of AI training" in html
    assert 'href="/accounts/signup/"' in html
    assert 'href="/accounts/login/"' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


@pytest.mark.parametrize(
    "path",
    ["/accounts/signup/", "/accounts/login/", "/accounts/password-reset/", "/privacy/"],
)
def test_public_pages_render_with_labelled_fields(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    html = response.content.decode()
    for field_id in re.findall(r'<input[^>]+type="(?:email|password|text)"[^>]+id="([^"]+)"', html):
        assert f'<label for="{field_id}"' in html


# --- sign up and confirmation ------------------------------------------------------


def test_signup_emails_a_confirmation_link_that_confirms_and_logs_in(client: Client) -> None:
    response = client.post(
        "/accounts/signup/",
        {"email": "Alice@Example.org", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    creator = Creator.objects.get(user__username="alice@example.org")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/signup/done/"
    assert creator.email_confirmed_at is None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@example.org"]
    link = CONFIRM_LINK.search(mail.outbox[0].body)
    assert link is not None

    confirmed = client.get(link.group(1))

    assert confirmed.status_code == 302
    assert confirmed["Location"] == "/me/"
    creator.refresh_from_db()
    assert creator.email_confirmed_at is not None
    assert client.get("/me/").status_code == 200


@override_settings(
    EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
    EMAIL_HOST="127.0.0.1",
    EMAIL_PORT=9,  # nothing listens here: the connection is refused
    EMAIL_TIMEOUT=5,
)
def test_signup_when_the_mail_server_is_down_says_so_instead_of_failing(client: Client) -> None:
    response = client.post(
        "/accounts/signup/",
        {"email": "ivy@example.org", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        follow=True,
    )

    assert response.redirect_chain == [("/accounts/signup/done/", 302)]
    assert "the confirmation email could not be sent" in response.content.decode()
    assert Creator.objects.get(user__username="ivy@example.org").email_confirmed_at is None


def test_confirmation_link_works_once_then_sends_the_creator_to_log_in(client: Client) -> None:
    client.post(
        "/accounts/signup/",
        {"email": "bob@example.org", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    link = CONFIRM_LINK.search(mail.outbox[0].body)
    assert link is not None
    client.get(link.group(1))
    first_confirmation = Creator.objects.get(user__username="bob@example.org").email_confirmed_at
    client.post("/accounts/logout/")

    again = client.get(link.group(1), follow=True)

    assert again.redirect_chain == [("/accounts/login/", 302)]
    assert "already confirmed" in again.content.decode()
    creator = Creator.objects.get(user__username="bob@example.org")
    assert creator.email_confirmed_at == first_confirmation


def test_confirmation_link_with_a_forged_token_confirms_nothing(client: Client) -> None:
    client.post(
        "/accounts/signup/",
        {"email": "carol@example.org", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    link = CONFIRM_LINK.search(mail.outbox[0].body)
    assert link is not None
    uidb64 = link.group(1).split("/")[3]

    response = client.get(f"/accounts/confirm/{uidb64}/abc-0123456789abcdef/")

    assert response.status_code == 400
    assert "not valid" in response.content.decode()
    assert Creator.objects.get(user__username="carol@example.org").email_confirmed_at is None
    assert client.get("/me/").status_code == 302


def test_signup_with_a_taken_email_shows_the_reason_and_creates_nothing(client: Client) -> None:
    creator_sign_up(email="dora@example.org", password=NEW_PASSWORD)

    response = client.post(
        "/accounts/signup/",
        {"email": "DORA@example.org", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 200
    assert "An account with this email already exists." in response.content.decode()
    assert get_user_model().objects.count() == 1
    assert mail.outbox == []


def test_signup_with_differing_or_weak_passwords_is_refused(client: Client) -> None:
    differing = client.post(
        "/accounts/signup/",
        {"email": "eve@example.org", "password1": NEW_PASSWORD, "password2": "something else 99"},
    )
    weak = client.post(
        "/accounts/signup/",
        {"email": "eve@example.org", "password1": "12345678", "password2": "12345678"},
    )

    assert "The two passwords differ." in differing.content.decode()
    assert "This password is too common." in weak.content.decode()
    assert Creator.objects.count() == 0
    assert mail.outbox == []


# --- log in / out ---------------------------------------------------------------


def test_login_refuses_an_unconfirmed_creator_and_offers_a_new_link(client: Client) -> None:
    creator_sign_up(email="fay@example.org", password=NEW_PASSWORD)

    response = client.post(
        "/accounts/login/", {"username": "fay@example.org", "password": NEW_PASSWORD}
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "Confirm your email address first" in html
    assert 'action="/accounts/confirm/resend/"' in html
    assert "Resend confirmation" in html
    assert "_auth_user_id" not in client.session


def test_resend_confirmation_mails_unconfirmed_accounts_only(client: Client) -> None:
    creator_sign_up(email="gil@example.org", password=NEW_PASSWORD)
    CreatorFactory(user__email="hal@example.org", user__username="hal@example.org")

    unconfirmed = client.post("/accounts/confirm/resend/", {"email": "GIL@example.org"})
    confirmed = client.post("/accounts/confirm/resend/", {"email": "hal@example.org"})
    unknown = client.post("/accounts/confirm/resend/", {"email": "nobody@example.org"})

    assert [r.status_code for r in (unconfirmed, confirmed, unknown)] == [200, 200, 200]
    assert unconfirmed.content == confirmed.content == unknown.content
    assert [message.to for message in mail.outbox] == [["gil@example.org"]]
    link = CONFIRM_LINK.search(mail.outbox[0].body)
    assert link is not None
    assert client.get(link.group(1)).status_code == 302
    assert Creator.objects.get(user__username="gil@example.org").is_confirmed


def test_login_refuses_a_suspended_creator(client: Client) -> None:
    creator = CreatorFactory(suspended_at=timezone.now())
    assert creator.user is not None

    response = client.post(
        "/accounts/login/", {"username": creator.user.email, "password": PASSWORD}
    )

    assert response.status_code == 200
    assert "This account is suspended" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_with_a_wrong_password_is_refused(client: Client) -> None:
    creator = CreatorFactory()
    assert creator.user is not None

    response = client.post(
        "/accounts/login/", {"username": creator.user.email, "password": "wrong password"}
    )

    assert response.status_code == 200
    assert "That email and password do not match an account." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_confirmed_creator_logs_in_with_any_case_email_and_lands_on_dashboard(
    client: Client,
) -> None:
    creator = CreatorFactory()
    assert creator.user is not None

    response = client.post(
        "/accounts/login/", {"username": creator.user.email.upper(), "password": PASSWORD}
    )

    assert response.status_code == 302
    assert response["Location"] == "/me/"
    assert client.session["_auth_user_id"] == str(creator.user.pk)


def test_logout_is_a_post_and_ends_the_session(client: Client) -> None:
    signed_in(client)

    refused = client.get("/accounts/logout/")
    response = client.post("/accounts/logout/")

    assert refused.status_code == 405
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "_auth_user_id" not in client.session


def test_password_reset_mails_a_link_that_sets_a_new_password(client: Client) -> None:
    creator = CreatorFactory()
    assert creator.user is not None

    requested = client.post("/accounts/password-reset/", {"email": creator.user.email})
    link = RESET_LINK.search(mail.outbox[0].body)
    assert link is not None
    form_page = client.get(link.group(1), follow=True)
    form_path = form_page.redirect_chain[-1][0]
    done = client.post(form_path, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    assert requested["Location"] == "/accounts/password-reset/done/"
    assert form_page.status_code == 200
    assert "Choose a new password" in form_page.content.decode()
    assert done["Location"] == "/accounts/reset/done/"
    creator.user.refresh_from_db()
    assert creator.user.check_password(NEW_PASSWORD)


# --- access to /me/ -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/me/",
        "/me/photos/",
        "/me/claims/",
        "/me/consent/",
        "/me/tokens/",
        "/me/opt-outs/",
        "/me/export/",
        "/me/delete/",
    ],
)
def test_me_pages_send_anonymous_visitors_to_log_in(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_me_pages_refuse_a_creator_suspended_after_logging_in(client: Client) -> None:
    creator = signed_in(client)
    Creator.objects.filter(pk=creator.pk).update(suspended_at=timezone.now())

    response = client.get("/me/photos/")

    assert response.status_code == 403
    assert "suspended" in response.content.decode()


# --- photos -------------------------------------------------------------------------


def test_photos_page_lists_the_creators_photos_fifty_per_page(client: Client) -> None:
    creator = signed_in(client)
    PhotoFactory.create_batch(51, creator=creator)

    first = client.get("/me/photos/")
    second = client.get("/me/photos/?page=2")

    assert first.status_code == 200
    assert len(first.context["page"].object_list) == 50
    assert len(second.context["page"].object_list) == 1
    assert "Page 1 of 2" in first.content.decode()
    assert 'href="/me/photos/?page=2"' in first.content.decode()
    html = first.content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert "privacy notice version 2026-11" in html
    assert 'name="csrfmiddlewaretoken"' in html


@override_settings(OPTOUT_MAX_PHOTO_BYTES=60_000)
def test_upload_reports_each_file_and_registers_only_the_good_ones(client: Client) -> None:
    creator = signed_in(client)
    good = jpeg_bytes(1)
    truncated = jpeg_bytes(2)[: len(jpeg_bytes(2)) // 2]
    too_large = jpeg_bytes(3, size=(1600, 1200), quality=95)
    assert len(good) < 60_000 < len(too_large)

    response = client.post(
        "/me/photos/upload/",
        {
            "photos": [
                upload("good.jpg", good),
                upload("notes.txt", b"just some text", "text/plain"),
                upload("half.jpg", truncated),
                upload("huge.jpg", too_large),
            ]
        },
    )

    assert response.status_code == 200
    assert outcomes(response) == [
        ("good.jpg", "registered"),
        ("notes.txt", "not_an_image"),
        ("half.jpg", "truncated"),
        ("huge.jpg", "too_large"),
    ]
    html = response.content.decode()
    for text in ("not an image", "truncated", "too large", "image file is truncated"):
        assert text in html
    assert "the limit is 60000 bytes" in html
    assert list(
        Photo.objects.filter(creator=creator).values_list("sha256", "original_filename")
    ) == [(sha(good), "good.jpg")]
    assert Photo.objects.get().channel == "web"


def test_upload_names_corrupt_files_and_decompression_bombs(client: Client) -> None:
    signed_in(client)
    canvas = io.BytesIO()
    # 56 megapixels of one-bit black: a 7 KB file that would decode to 168 MB.
    Image.new("1", (8000, 7000)).save(canvas, "PNG")
    bomb = upload("bomb.png", canvas.getvalue(), "image/png")
    damaged = upload("bad.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    good = jpeg_bytes(5)

    response = client.post(
        "/me/photos/upload/", {"photos": [bomb, upload("good.jpg", good), damaged]}
    )

    assert response.status_code == 200
    assert outcomes(response) == [
        ("bomb.png", "decompression_bomb"),
        ("good.jpg", "registered"),
        ("bad.jpg", "corrupt"),
    ]
    html = response.content.decode()
    assert "decompression bomb" in html
    assert "image is 8000x7000 pixels; the limit is 50000000 pixels" in html
    assert "JPEG header is damaged" in html
    assert list(Photo.objects.values_list("sha256", flat=True)) == [sha(good)]


def test_upload_of_a_zip_registers_its_good_members_and_reports_the_bad(client: Client) -> None:
    creator = signed_in(client)
    first, second = jpeg_bytes(11), jpeg_bytes(12)
    archive = zip_of(
        {
            "holiday/one.jpg": first,
            "holiday/two.jpg": second,
            "holiday/readme.txt": b"not a photo",
            "holiday/broken.jpg": jpeg_bytes(13)[:500],
        }
    )

    response = client.post(
        "/me/photos/upload/", {"photos": [upload("holiday.zip", archive, "application/zip")]}
    )

    assert response.status_code == 200
    assert outcomes(response) == [
        ("holiday.zip/holiday/one.jpg", "registered"),
        ("holiday.zip/holiday/two.jpg", "registered"),
        ("holiday.zip/holiday/readme.txt", "not_an_image"),
        ("holiday.zip/holiday/broken.jpg", "truncated"),
    ]
    assert set(
        Photo.objects.filter(creator=creator).values_list("sha256", "original_filename")
    ) == {
        (sha(first), "one.jpg"),
        (sha(second), "two.jpg"),
    }


def test_uploading_the_same_photo_again_reports_already_registered(client: Client) -> None:
    creator = signed_in(client)
    photo = jpeg_bytes(21)
    client.post("/me/photos/upload/", {"photos": [upload("a.jpg", photo)]})
    events = ConsentEvent.objects.count()

    response = client.post("/me/photos/upload/", {"photos": [upload("copy.jpg", photo)]})

    assert outcomes(response) == [("copy.jpg", "already_registered")]
    assert "already registered" in response.content.decode()
    assert Photo.objects.filter(creator=creator).count() == 1
    assert ConsentEvent.objects.count() == events


def test_upload_without_files_asks_for_one_and_registers_nothing(client: Client) -> None:
    signed_in(client)

    response = client.post("/me/photos/upload/", {})

    assert response.status_code == 400
    assert "Choose at least one photo or ZIP file." in response.content.decode()
    assert Photo.objects.count() == 0


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=20_000)
def test_upload_beyond_the_request_cap_gets_a_413_page(client: Client) -> None:
    signed_in(client)
    photo = jpeg_bytes(31, size=(640, 480))
    assert len(photo) > 20_000

    response = client.post("/me/photos/upload/", {"photos": [upload("big.jpg", photo)]})

    assert response.status_code == 413
    html = response.content.decode()
    assert "That upload is too large" in html
    assert "19.5\xa0KB" in html
    assert Photo.objects.count() == 0


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1_000)
def test_a_form_post_beyond_the_request_cap_gets_a_413_page(client: Client) -> None:
    signed_in(client)

    response = client.post("/me/claims/", {"kind": "domain", "value": "x" * 5_000})

    assert response.status_code == 413
    assert "That upload is too large" in response.content.decode()
    assert Claim.objects.count() == 0


@override_settings(DATA_UPLOAD_MAX_NUMBER_FILES=2)
def test_upload_of_more_files_than_allowed_gets_a_413_page(client: Client) -> None:
    signed_in(client)

    response = client.post(
        "/me/photos/upload/",
        {"photos": [upload(f"{n}.jpg", jpeg_bytes(40 + n)) for n in range(3)]},
    )

    assert response.status_code == 413
    assert "at most 2 files" in response.content.decode()
    assert Photo.objects.count() == 0


def test_hashes_file_reports_bad_lines_by_number_and_registers_the_good(client: Client) -> None:
    creator = signed_in(client)
    lines = [
        json.dumps({"sha256": "a" * 64, "pdq": "b" * 64, "phash": "c" * 16, "filename": "x/a.jpg"}),
        '{"sha256": "not json',
        "",
        json.dumps({"sha256": "1234"}),
        json.dumps({"sha256": "d" * 64}),
    ]

    response = hashes_file_posted(client, "\n".join(lines).encode())

    assert response.status_code == 200
    result = response.context["hashes_result"]
    assert (result.total, result.registered, result.rejected) == (4, 2, 2)
    assert [(row.line, row.reason) for row in result.rows] == [
        (2, "not valid JSON: Unterminated string starting at"),
        (4, "sha256 must be 64 hexadecimal digits"),
    ]
    html = response.content.decode()
    assert "<td>2</td>" in html and "<td>4</td>" in html
    assert set(
        Photo.objects.filter(creator=creator).values_list("sha256", "original_filename")
    ) == {
        ("a" * 64, "a.jpg"),
        ("d" * 64, ""),
    }


def test_hashes_file_that_is_not_text_is_refused_as_a_whole(client: Client) -> None:
    signed_in(client)

    response = client.post(
        "/me/photos/hashes/", {"hashes": upload("hashes.jsonl", b"\xff\xfe\x00bad", "text/plain")}
    )

    assert response.status_code == 200
    assert [(row.line, row.reason) for row in response.context["hashes_result"].rows] == [
        (None, "file is not UTF-8 text")
    ]
    assert "whole file" in response.content.decode()
    assert Photo.objects.count() == 0


def test_photo_detail_shows_the_hashes_of_the_creators_own_photo(client: Client) -> None:
    creator = signed_in(client)
    photo = PhotoFactory(creator=creator, original_filename="sunset.jpg")

    response = client.get(f"/me/photos/{photo.public_id}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert photo.sha256 in html and photo.pdq in html and photo.phash in html


# --- claims -------------------------------------------------------------------------


def test_adding_a_claim_stores_its_normalised_value(client: Client) -> None:
    creator = signed_in(client)

    response = client.post(
        "/me/claims/", {"kind": "domain", "value": "https://www.Example.COM/gallery"}, follow=True
    )

    assert response.redirect_chain == [("/me/claims/", 302)]
    assert "Claim added: domain example.com" in response.content.decode()
    assert list(Claim.objects.filter(creator=creator).values_list("kind", "value", "channel")) == [
        ("domain", "example.com", "web")
    ]


def test_an_invalid_claim_shows_the_reason_and_adds_nothing(client: Client) -> None:
    signed_in(client)

    response = client.post("/me/claims/", {"kind": "handle", "value": "no platform"})

    assert response.status_code == 400
    assert "is not a handle; write platform:name" in response.content.decode()
    assert Claim.objects.count() == 0
    assert ConsentEvent.objects.count() == 0


def test_adding_the_same_claim_twice_keeps_one(client: Client) -> None:
    creator = signed_in(client)
    claim_add(creator=creator, kind="handle", value="instagram:alice", channel="web")
    events = ConsentEvent.objects.count()

    response = client.post(
        "/me/claims/", {"kind": "handle", "value": "Instagram:@Alice"}, follow=True
    )

    assert "You had already claimed instagram:alice." in response.content.decode()
    assert Claim.objects.count() == 1
    assert ConsentEvent.objects.count() == events


# --- consent history -----------------------------------------------------------------


def test_consent_history_lists_the_creators_events_newest_first(client: Client) -> None:
    creator = signed_in(client)
    claim_add(creator=creator, kind="domain", value="one.example", channel="web")
    claim_add(creator=creator, kind="domain", value="two.example", channel="api")
    claim_add(creator=CreatorFactory(), kind="domain", value="other.example", channel="web")

    response = client.get("/me/consent/")

    assert response.status_code == 200
    events = list(response.context["page"].object_list)
    assert [event.details["value"] for event in events] == ["two.example", "one.example"]
    assert [event.channel for event in events] == ["api", "web"]
    assert "other.example" not in response.content.decode()
    assert "2026-11" in response.content.decode()


# --- personal tokens ---------------------------------------------------------------------


def test_creating_a_token_shows_it_once_and_stores_only_its_digest(client: Client) -> None:
    creator = signed_in(client)

    created = client.post("/me/tokens/", {"name": "laptop"})
    raw = created.context["raw_token"]
    later = client.get("/me/tokens/")

    assert created.status_code == 200
    assert raw in created.content.decode()
    assert created["Cache-Control"] == "no-store"
    token = PersonalToken.objects.get(creator=creator)
    assert (token.name, token.digest, token.prefix) == ("laptop", token_digest(raw), raw[:12])
    assert raw not in later.content.decode()
    assert token.prefix in later.content.decode()


def test_revoking_a_token_twice_keeps_the_first_revocation(client: Client) -> None:
    creator = signed_in(client)
    token, _ = token_create(creator=creator, name="ci")

    first = client.post(f"/me/tokens/{token.public_id}/revoke/", follow=True)
    token.refresh_from_db()
    revoked_at = token.revoked_at
    second = client.post(f"/me/tokens/{token.public_id}/revoke/", follow=True)

    assert revoked_at is not None
    assert "Token “ci” revoked" in first.content.decode()
    assert "was already revoked" in second.content.decode()
    token.refresh_from_db()
    assert token.revoked_at == revoked_at


def test_revoke_is_a_post(client: Client) -> None:
    creator = signed_in(client)
    token, _ = token_create(creator=creator, name="ci")

    response = client.get(f"/me/tokens/{token.public_id}/revoke/")

    assert response.status_code == 405
    token.refresh_from_db()
    assert token.revoked_at is None


# --- CSRF everywhere -----------------------------------------------------------------------

POST_FORM = re.compile(r"<form\b[^>]*\bmethod=\"post\"[^>]*>(.*?)</form>", re.S | re.I)
CSRF_INPUT = re.compile(r'<input type="hidden" name="csrfmiddlewaretoken" value="([^"]+)">')


def post_forms(html: str) -> list[str]:
    return POST_FORM.findall(html)


def test_every_post_form_of_every_page_carries_a_csrf_token() -> None:
    from optout.services import opt_out_file

    anonymous = Client(enforce_csrf_checks=True)
    client = Client(enforce_csrf_checks=True)
    creator = signed_in(client)
    token_create(creator=creator, name="laptop")
    opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    # Page -> number of post forms on it (the log-out form of the navigation included).
    expected = {
        "/accounts/signup/": (anonymous, 1),
        "/accounts/login/": (anonymous, 1),
        "/accounts/password-reset/": (anonymous, 1),
        "/me/": (client, 1),
        "/me/photos/": (client, 3),  # upload files, upload hashes
        "/me/claims/": (client, 2),
        "/me/tokens/": (client, 3),  # create, revoke
        "/me/opt-outs/": (client, 3),  # withdraw, file
        "/me/delete/": (client, 2),
    }

    for path, (who, count) in expected.items():
        html = who.get(path).content.decode()
        forms = post_forms(html)
        assert len(forms) == count, (path, len(forms))
        assert all(CSRF_INPUT.search(form) for form in forms), path


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing() -> None:
    from optout.models import OptOut
    from optout.services import opt_out_file

    client = Client(enforce_csrf_checks=True)
    creator = signed_in(client)
    token, _ = token_create(creator=creator, name="laptop")
    opt_out = opt_out_file(creator=creator, uses=["ai_training"], scope="all_photos", channel="web")
    events = ConsentEvent.objects.count()
    posts: list[tuple[str, dict[str, object]]] = [
        ("/me/photos/upload/", {"photos": [upload("a.jpg", jpeg_bytes(1))]}),
        ("/me/photos/hashes/", {"hashes": upload("h.jsonl", b'{"sha256": "' + b"a" * 64 + b'"}')}),
        ("/me/claims/", {"kind": "domain", "value": "example.com"}),
        ("/me/tokens/", {"name": "forged"}),
        (f"/me/tokens/{token.public_id}/revoke/", {}),
        ("/me/opt-outs/", {"uses": ["data_mining"], "scope": "all_photos"}),
        (f"/me/opt-outs/{opt_out.public_id}/withdraw/", {}),
        ("/me/delete/", {"opt_outs": "withdraw", "password": PASSWORD}),
        ("/accounts/logout/", {}),
    ]
    anonymous_posts: list[tuple[str, dict[str, object]]] = [
        ("/accounts/signup/", {"email": "x@example.org", "password1": NEW_PASSWORD}),
        ("/accounts/login/", {"username": "x@example.org", "password": NEW_PASSWORD}),
        ("/accounts/password-reset/", {"email": creator.user.email}),  # type: ignore[union-attr]
        ("/accounts/confirm/resend/", {"email": creator.user.email}),  # type: ignore[union-attr]
    ]

    statuses = [client.post(path, data).status_code for path, data in posts]
    anonymous = Client(enforce_csrf_checks=True)
    anonymous_statuses = [anonymous.post(path, data).status_code for path, data in anonymous_posts]

    assert statuses == [403] * len(posts)
    assert anonymous_statuses == [403] * len(anonymous_posts)
    assert Photo.objects.count() == Claim.objects.count() == 0
    assert PersonalToken.objects.filter(creator=creator).count() == 1
    token.refresh_from_db()
    opt_out.refresh_from_db()
    assert (token.revoked_at, opt_out.withdrawn_at) == (None, None)
    assert OptOut.objects.count() == 1
    assert ConsentEvent.objects.count() == events
    creator.refresh_from_db()
    assert creator.user is not None and creator.anonymized_at is None
    assert get_user_model().objects.count() == 1
    assert mail.outbox == []
    assert client.get("/me/").status_code == 200  # still logged in


def test_a_post_with_the_csrf_token_of_the_page_goes_through() -> None:
    client = Client(enforce_csrf_checks=True)
    creator = signed_in(client)
    token = CSRF_INPUT.search(post_forms(client.get("/me/claims/").content.decode())[-1])
    assert token is not None

    response = client.post(
        "/me/claims/",
        {"kind": "domain", "value": "example.com", "csrfmiddlewaretoken": token.group(1)},
    )

    assert response.status_code == 302
    assert Claim.objects.filter(creator=creator).count() == 1
