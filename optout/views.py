"""Creator pages of the optout app: dashboard, opt-outs (file, change,
withdraw), export, account deletion. Each view validates a form, calls one
service and renders; every read goes through optout.selectors, filtered by the signed-in creator."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from optout import selectors, services
from optout.forms import AccountDeleteForm, OptOutFileForm
from optout.models import OptOut
from registry.models import Channel, Creator
from registry.views import creator_required, paginate


@require_GET
@creator_required
def dashboard(request: HttpRequest, creator: Creator) -> HttpResponse:
    context = {
        "counts": selectors.dashboard_counts(creator=creator),
        "events": selectors.consent_events_for_creator(creator=creator)[
            : selectors.DASHBOARD_RECENT_EVENTS
        ],
    }
    return render(request, "optout/dashboard.html", context)


def _opt_out_form_context(form: OptOutFileForm, choices: selectors.OptOutChoices) -> dict[str, Any]:
    """What the opt-out form's fields (optout/_opt_out_fields.html) and the
    notice beside them need, for filing and changing alike."""
    return {
        "form": form,
        "photos_total": choices.photos_total,
        "photos_shown": len(choices.photos),
        "notice_version": settings.OPTOUT_NOTICE_VERSION,
    }


@require_http_methods(["GET", "POST"])
@creator_required
def opt_outs(request: HttpRequest, creator: Creator) -> HttpResponse:
    choices = selectors.opt_out_choices(creator=creator)
    form = OptOutFileForm(request.POST or None, choices=choices)
    if request.method == "POST" and form.is_valid():
        try:
            opt_out = services.opt_out_file(
                creator=creator, channel=Channel.WEB, **form.service_arguments()
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(
                request,
                f"Opt-out filed; pipelines exclude your works from registry version "
                f"{opt_out.filed_version} on.",
            )
            return redirect("optout:opt_outs")
    context = {
        **_opt_out_form_context(form, choices),
        "page": paginate(request, selectors.opt_outs_for_creator(creator=creator)),
    }
    return render(request, "optout/opt_outs.html", context, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@creator_required
def opt_out_change(request: HttpRequest, creator: Creator, opt_out_id: uuid.UUID) -> HttpResponse:
    """The filing form, prefilled with an active opt-out; posting it supersedes
    the opt-out. A withdrawn, unknown or another creator's opt-out is a 404."""
    opt_out = selectors.opt_out_active_for_creator(creator=creator, public_id=opt_out_id)
    if opt_out is None:
        raise Http404("No such active opt-out.")
    choices = selectors.opt_out_choices(creator=creator, opt_out=opt_out)
    form = OptOutFileForm(
        request.POST or None, choices=choices, initial=OptOutFileForm.initial_of(opt_out)
    )
    if request.method == "POST" and form.is_valid():
        try:
            changed = services.opt_out_change(
                creator=creator,
                public_id=opt_out.public_id,
                channel=Channel.WEB,
                **form.service_arguments(),
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            if changed.pk == opt_out.pk:
                messages.info(request, "You changed nothing; the opt-out stays as it was.")
            else:
                messages.success(
                    request,
                    f"Opt-out changed; from registry version {changed.filed_version} on "
                    "pipelines apply the changed opt-out instead of the old one.",
                )
            return redirect("optout:opt_outs")
    context = {**_opt_out_form_context(form, choices), "opt_out": opt_out}
    return render(
        request, "optout/opt_out_change.html", context, status=400 if form.errors else 200
    )


@require_POST
@creator_required
def opt_out_withdraw(request: HttpRequest, creator: Creator, opt_out_id: uuid.UUID) -> HttpResponse:
    opt_out = get_object_or_404(OptOut, creator=creator, public_id=opt_out_id)
    if not opt_out.is_active:
        messages.info(
            request,
            f"That opt-out was already withdrawn (registry version "
            f"{opt_out.withdrawn_version}); nothing changed.",
        )
        return redirect("optout:opt_outs")
    opt_out = services.opt_out_withdraw(
        creator=creator, opt_out_id=opt_out.public_id, channel=Channel.WEB
    )
    messages.success(
        request,
        f"Opt-out withdrawn; it stops applying from registry version {opt_out.withdrawn_version}.",
    )
    return redirect("optout:opt_outs")


@require_GET
@creator_required
def export(request: HttpRequest, creator: Creator) -> HttpResponse:
    data = selectors.creator_export(creator)
    filename = f"opt-out-registry-export-{timezone.now():%Y-%m-%d}.json"
    response = HttpResponse(
        json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Personal data: never kept by a shared cache or the browser's back button.
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
@creator_required
def account_delete(request: HttpRequest, creator: Creator) -> HttpResponse:
    assert creator.user is not None
    form = AccountDeleteForm(request.POST or None, user=creator.user)
    if request.method == "POST" and form.is_valid():
        services.creator_delete(
            creator=creator, keep_opt_outs=form.keep_opt_outs, channel=Channel.WEB
        )
        logout(request)
        if form.keep_opt_outs:
            messages.success(
                request,
                "Your account is deleted. Your opt-outs stay in force as anonymous "
                "hash-only records.",
            )
        else:
            messages.success(
                request, "Your account is deleted, your opt-outs withdrawn and your photos removed."
            )
        return redirect("registry:home")
    context = {
        "form": form,
        "counts": selectors.dashboard_counts(creator=creator),
    }
    return render(request, "optout/delete.html", context, status=400 if form.errors else 200)
