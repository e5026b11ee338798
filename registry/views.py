"""Creator pages of the registry app: accounts, photos, claims, consent history,
personal tokens. Each view validates a form, calls one service and renders.

Every page under /me/ goes through ``creator_required`` and reads only the
signed-in creator's rows, so another creator's object is a 404.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Any, Concatenate, ParamSpec

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.mail import send_mail
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.encoding import force_bytes, force_str
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from registry import services
from registry.auth import request_creator
from registry.forms import (
    UNCONFIRMED,
    ClaimForm,
    HashesUploadForm,
    LoginForm,
    PhotoUploadForm,
    ResendConfirmationForm,
    SignUpForm,
    TokenCreateForm,
)
from registry.models import Channel, Claim, ConsentEvent, Creator, PersonalToken, Photo
from registry.services import PhotoOutcome
from registry.tokens import email_confirmation_token
from registry.uploads import hash_files, hashes_jsonl_parse

logger = logging.getLogger(__name__)

P = ParamSpec("P")
CreatorView = Callable[Concatenate[HttpRequest, Creator, P], HttpResponse]

# 50 rows per page keep a list readable on a phone and each page one cheap query.
PAGE_SIZE = 50
# A hashes file may hold 100 000 lines; the page lists at most this many problem
# lines (with the total), which is plenty to fix a file and stays a small page.
MAX_ERROR_ROWS_SHOWN = 1_000

OUTCOME_LABELS = {
    "registered": "registered",
    "already_registered": "already registered",
    "not_an_image": "not an image",
    "unsupported_format": "unsupported image format",
    "too_large": "too large",
    "corrupt": "corrupt",
    "truncated": "truncated",
    "decompression_bomb": "decompression bomb",
    "invalid": "invalid line",
}


def creator_required(view: CreatorView[P]) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """Signed-in, confirmed, active creators only; the view receives the creator."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        creator = request_creator(request)
        if creator is None or not creator.is_confirmed:
            return render(request, "registry/not_allowed.html", status=403)
        return view(request, creator, *args, **kwargs)

    return wrapped


def paginate(request: HttpRequest, queryset: QuerySet[Any], per_page: int = PAGE_SIZE) -> Page:
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def notice_version() -> str:
    return str(settings.OPTOUT_NOTICE_VERSION)


# --- public pages -----------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "registry/home.html", {"creator": request_creator(request)})


@require_GET
def privacy(request: HttpRequest) -> HttpResponse:
    return render(request, "registry/privacy.html", {"notice_version": notice_version()})


# --- accounts ---------------------------------------------------------------


def _confirmation_send(request: HttpRequest, user: User) -> bool:
    """Email the confirmation link, synchronously: signing up is rare and the
    creator is waiting for exactly this message. False if the mail server
    refused it; the account stands and the login page offers a new link."""
    path = reverse(
        "registry:confirm",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": email_confirmation_token.make_token(user),
        },
    )
    link = request.build_absolute_uri(path)
    try:
        send_mail(
            subject="Confirm your email for the Opt-Out Registry",
            message=(
                "Welcome to the Opt-Out Registry.\n\n"
                f"Open this link to confirm your email address:\n\n{link}\n\n"
                "If you did not sign up, ignore this message; nothing happens without the link.\n"
            ),
            from_email=None,
            recipient_list=[user.email],
        )
    except (smtplib.SMTPException, OSError):
        # Like Django's password reset: log it (user id only, never the address).
        logger.exception("could not send the confirmation email to user %s", user.pk)
        return False
    return True


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            creator = services.creator_sign_up(
                email=form.cleaned_data["email"], password=form.cleaned_data["password1"]
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            assert creator.user is not None
            if not _confirmation_send(request, creator.user):
                messages.error(
                    request,
                    "Your account is created, but the confirmation email could not be sent. "
                    "Try again later from the log-in page: it offers to resend it.",
                )
            return redirect("registry:signup_done")
    return render(request, "registry/signup.html", {"form": form})


@require_GET
def signup_done(request: HttpRequest) -> HttpResponse:
    return render(request, "registry/signup_done.html")


def _user_from_uidb64(uidb64: str) -> User | None:
    user_model = get_user_model()
    try:
        pk = force_str(urlsafe_base64_decode(uidb64))
        return user_model.objects.select_related("creator").get(pk=pk)
    except (TypeError, ValueError, OverflowError, ValidationError, user_model.DoesNotExist):
        return None


def _confirm_invalid(request: HttpRequest) -> HttpResponse:
    context = {"form": ResendConfirmationForm()}
    return render(request, "registry/confirm_invalid.html", context, status=400)


@require_GET
def confirm(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    user = _user_from_uidb64(uidb64)
    creator: Creator | None = getattr(user, "creator", None)
    if user is None or creator is None or creator.anonymized_at is not None:
        return _confirm_invalid(request)
    if not email_confirmation_token.check_token(user, token):
        if creator.is_confirmed:
            messages.info(request, "Your email address is already confirmed. Log in.")
            return redirect("registry:login")
        return _confirm_invalid(request)
    services.creator_confirm_email(creator=creator)
    if creator.suspended_at is not None:
        messages.error(request, "Your email is confirmed, but this account is suspended.")
        return redirect("registry:login")
    login(request, user, backend="registry.auth.EmailBackend")
    messages.success(request, "Thank you: your email address is confirmed and you are logged in.")
    return redirect("optout:dashboard")


@require_POST
def confirmation_resend(request: HttpRequest) -> HttpResponse:
    """Send a new link to an unconfirmed account. The answer is the same whether
    or not the address has an account, so the page reveals nobody's email."""
    form = ResendConfirmationForm(request.POST)
    if not form.is_valid():
        return render(request, "registry/confirm_invalid.html", {"form": form}, status=400)
    email = form.cleaned_data["email"].strip().lower()
    creator = (
        Creator.objects.select_related("user")
        .filter(
            user__username=email,
            user__is_active=True,
            email_confirmed_at__isnull=True,
            anonymized_at__isnull=True,
        )
        .first()
    )
    if creator is not None and creator.user is not None:
        _confirmation_send(request, creator.user)
    return render(request, "registry/signup_done.html", {"resent": True})


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    template_name = "registry/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        form = context["form"]
        unconfirmed = form.is_bound and form.has_error("__all__", UNCONFIRMED)
        context["unconfirmed"] = unconfirmed
        if unconfirmed:
            context["resend_form"] = ResendConfirmationForm(
                initial={"email": form.data.get("username", "")}
            )
        return context


class LogoutView(auth_views.LogoutView):
    http_method_names = ["post", "options"]


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "registry/password_reset.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("registry:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "registry/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "registry/password_reset_confirm.html"
    success_url = reverse_lazy("registry:password_reset_complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "registry/password_reset_complete.html"


# --- photos -----------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeRow:
    filename: str
    status: str
    label: str
    reason: str
    line: int | None
    photo: uuid.UUID | None

    @property
    def is_error(self) -> bool:
        return self.status not in {"registered", "already_registered"}


@dataclass(frozen=True)
class OutcomeSummary:
    total: int
    registered: int
    already_registered: int
    rejected: int
    rows: list[OutcomeRow]
    rows_hidden: int


def _outcome_summary(outcomes: list[PhotoOutcome], *, errors_only: bool = False) -> OutcomeSummary:
    counts = Counter(outcome.status for outcome in outcomes)
    rows = [
        OutcomeRow(
            filename=outcome.filename,
            status=outcome.error_code or outcome.status,
            label=OUTCOME_LABELS.get(outcome.error_code or outcome.status, outcome.error_code),
            reason=outcome.error,
            line=outcome.line,
            photo=outcome.photo,
        )
        for outcome in outcomes
        if not errors_only or outcome.status == "error"
    ]
    return OutcomeSummary(
        total=len(outcomes),
        registered=counts["registered"],
        already_registered=counts["already_registered"],
        rejected=counts["error"],
        rows=rows[:MAX_ERROR_ROWS_SHOWN],
        rows_hidden=max(0, len(rows) - MAX_ERROR_ROWS_SHOWN),
    )


def _photos_page(
    request: HttpRequest,
    creator: Creator,
    *,
    upload_form: PhotoUploadForm | None = None,
    hashes_form: HashesUploadForm | None = None,
    upload_result: OutcomeSummary | None = None,
    hashes_result: OutcomeSummary | None = None,
) -> HttpResponse:
    photos = Photo.objects.filter(creator=creator).order_by("-created_at", "-id")
    refused = any(f is not None and f.errors for f in (upload_form, hashes_form))
    # An upload whose every file was refused is bad input as a whole; the page
    # still names each file and its reason.
    if upload_result is not None and upload_result.rejected == upload_result.total:
        refused = True
    status = 400 if refused else 200
    context = {
        "page": paginate(request, photos),
        # The upload views render this page too; page links go back to the list.
        "list_url": reverse("registry:photos"),
        "upload_form": upload_form or PhotoUploadForm(),
        "hashes_form": hashes_form or HashesUploadForm(),
        "upload_result": upload_result,
        "hashes_result": hashes_result,
        "notice_version": notice_version(),
        "max_photo_bytes": settings.OPTOUT_MAX_PHOTO_BYTES,
        "max_hash_lines": settings.OPTOUT_MAX_HASH_LINES,
    }
    return render(request, "registry/photos.html", context, status=status)


def _read_files(files: Iterable[UploadedFile]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each upload, read one at a time from memory (the upload
    handlers keep every file in memory; nothing touches the disk)."""
    for upload in files:
        yield upload.name or "unnamed", upload.read()


@require_GET
@creator_required
def photos(request: HttpRequest, creator: Creator) -> HttpResponse:
    return _photos_page(request, creator)


@require_POST
@creator_required
def photos_upload(request: HttpRequest, creator: Creator) -> HttpResponse:
    form = PhotoUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _photos_page(request, creator, upload_form=form)
    items = hash_files(
        _read_files(form.cleaned_data["photos"]), max_bytes=settings.OPTOUT_MAX_PHOTO_BYTES
    )
    outcomes = services.photos_register_hashed(creator=creator, items=items, channel=Channel.WEB)
    return _photos_page(request, creator, upload_result=_outcome_summary(outcomes))


@require_POST
@creator_required
def photos_upload_hashes(request: HttpRequest, creator: Creator) -> HttpResponse:
    form = HashesUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _photos_page(request, creator, hashes_form=form)
    lines = hashes_jsonl_parse(
        form.cleaned_data["hashes"].read(), max_lines=settings.OPTOUT_MAX_HASH_LINES
    )
    # Line 0 is the parser's "the whole file is unreadable".
    items = [(number or None, line) for number, line in lines]
    outcomes = services.photos_register_from_hashes(
        creator=creator, items=items, channel=Channel.WEB
    )
    result = _outcome_summary(outcomes, errors_only=True)
    return _photos_page(request, creator, hashes_result=result)


@require_GET
@creator_required
def photo_detail(request: HttpRequest, creator: Creator, photo_id: uuid.UUID) -> HttpResponse:
    photo = get_object_or_404(Photo, creator=creator, public_id=photo_id)
    return render(request, "registry/photo_detail.html", {"photo": photo})


# --- claims -----------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@creator_required
def claims(request: HttpRequest, creator: Creator) -> HttpResponse:
    form = ClaimForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            claim, created = services.claim_add(
                creator=creator,
                kind=form.cleaned_data["kind"],
                value=form.cleaned_data["value"],
                channel=Channel.WEB,
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            if created:
                messages.success(request, f"Claim added: {claim.get_kind_display()} {claim.value}")
            else:
                messages.info(request, f"You had already claimed {claim.value}.")
            return redirect("registry:claims")
    context = {
        "form": form,
        "claims": Claim.objects.filter(creator=creator).order_by("kind", "value"),
        "notice_version": notice_version(),
    }
    return render(request, "registry/claims.html", context, status=400 if form.errors else 200)


# --- consent history ----------------------------------------------------------


@require_GET
@creator_required
def consent_history(request: HttpRequest, creator: Creator) -> HttpResponse:
    events = ConsentEvent.objects.filter(creator_public_id=creator.public_id).order_by(
        "-registry_version"
    )
    return render(request, "registry/consent_history.html", {"page": paginate(request, events)})


# --- personal tokens ----------------------------------------------------------


@require_http_methods(["GET", "POST"])
@creator_required
def tokens(request: HttpRequest, creator: Creator) -> HttpResponse:
    form = TokenCreateForm(request.POST or None)
    raw_token = ""
    if request.method == "POST" and form.is_valid():
        _, raw_token = services.token_create(creator=creator, name=form.cleaned_data["name"])
        form = TokenCreateForm()
    context = {
        "form": form,
        # Shown in this response only; the registry keeps just its digest.
        "raw_token": raw_token,
        "tokens": PersonalToken.objects.filter(creator=creator).order_by("-created_at"),
    }
    response = render(request, "registry/tokens.html", context, status=400 if form.errors else 200)
    if raw_token:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@creator_required
def token_revoke(request: HttpRequest, creator: Creator, token_id: uuid.UUID) -> HttpResponse:
    token = get_object_or_404(PersonalToken, creator=creator, public_id=token_id)
    was_active = token.is_active
    services.token_revoke(token=token)
    if was_active:
        messages.success(request, f"Token “{token.name}” revoked; it no longer works.")
    else:
        messages.info(request, f"Token “{token.name}” was already revoked.")
    return redirect("registry:tokens")
