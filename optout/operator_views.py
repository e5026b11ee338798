"""The operator dashboard: a page in the Django admin and the same figures as
JSON for monitoring scripts. Both are wrapped in admin.site.admin_view in
config/urls.py, so only active staff reach them (others get the admin login)."""

from __future__ import annotations

import dataclasses

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from optout.operator_dashboard import (
    BROKER_TIMEOUT_SECONDS,
    TOP_ORGANIZATIONS,
    WINDOW_DAYS,
    operator_dashboard,
)


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Operator dashboard",
        "dashboard": operator_dashboard(),
        "window_days": WINDOW_DAYS,
        "top_organizations": TOP_ORGANIZATIONS,
        "broker_timeout_seconds": BROKER_TIMEOUT_SECONDS,
    }
    return render(request, "optout/operator_dashboard.html", context)


@require_GET
def dashboard_json(request: HttpRequest) -> JsonResponse:
    # DjangoJSONEncoder (JsonResponse's default) writes the dates and UUIDs.
    return JsonResponse(dataclasses.asdict(operator_dashboard()))
