"""Creator pages of the optout app (the REST API lives in api_urls.py)."""

from django.urls import path

from config import converters  # noqa: F401 - registers <any_uuid:...>
from optout import views

app_name = "optout"

urlpatterns = [
    path("me/", views.dashboard, name="dashboard"),
    path("me/opt-outs/", views.opt_outs, name="opt_outs"),
    path(
        "me/opt-outs/<any_uuid:opt_out_id>/change/",
        views.opt_out_change,
        name="opt_out_change",
    ),
    path(
        "me/opt-outs/<any_uuid:opt_out_id>/withdraw/",
        views.opt_out_withdraw,
        name="opt_out_withdraw",
    ),
    path("me/export/", views.export, name="export"),
    path("me/delete/", views.account_delete, name="account_delete"),
]
