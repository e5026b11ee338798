"""Admin guards: a query string or a selection the database cannot take is an
invalid lookup or an empty selection, never a 500.

Django's changelist turns most wrong filter parameters into
IncorrectLookupParameters (it redirects to ``?e=1``), but some get past it and
fail only when the query runs: a NUL character (PostgreSQL text cannot hold
one), a year outside 1-9999 (``created_at__year=99999``: Python dates end
there), the day after the last date Python holds in the date hierarchy, a
regular expression PostgreSQL cannot compile, a range of three values. An
action POST whose ``_selected_action`` is not a primary key fails in the
action's query; a change page's id with a NUL in PostgreSQL; an add page's
``?expiry_date=...`` (initial data) in the date-time widget, which cannot show a
string. Every ModelAdmin of the project derives from GuardedModelAdmin, which
refuses these before any query runs.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.filters import ListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse

NUL = "\x00"
# Lookups Django turns into the first and last instant of a year (datetime objects).
_YEAR_LOOKUPS = frozenset({"year", "iso_year"})
_YEAR_COMPARISONS = frozenset({"exact", "gt", "gte", "lt", "lte"})
# PostgreSQL refuses a pattern it cannot compile; no admin link or filter builds one.
_REGEX_LOOKUPS = frozenset({"regex", "iregex"})

NO_VALID_SELECTION = (
    "No valid items selected: the selection holds a value that is not an id. "
    "No items have been changed."
)


def _is_year_lookup(parts: Sequence[str]) -> bool:
    """``created_at__year`` or ``created_at__year__gte`` (not a field named year)."""
    if len(parts) >= 2 and parts[-1] in _YEAR_LOOKUPS:
        return True
    return len(parts) >= 3 and parts[-2] in _YEAR_LOOKUPS and parts[-1] in _YEAR_COMPARISONS


def _year_out_of_range(value: str) -> bool:
    try:
        year = int(value)
    except ValueError:
        return False  # not a number: Django's own check refuses it
    return not datetime.MINYEAR <= year <= datetime.MAXYEAR


def lookup_params_check(params: Mapping[str, Sequence[str]]) -> None:
    """Raise IncorrectLookupParameters for a filter parameter (name → values,
    as the changelist reads them) that would fail in the database or in date
    arithmetic instead of filtering."""
    for key, values in params.items():
        if NUL in key or any(NUL in value for value in values):
            raise IncorrectLookupParameters(f"{key!r}: a NUL character")
        parts = key.split(LOOKUP_SEP)
        if parts[-1] in _REGEX_LOOKUPS:
            raise IncorrectLookupParameters(f"{key!r}: regular expressions are not offered")
        if parts[-1] == "range" and any(len(value.split(",")) != 2 for value in values):
            raise IncorrectLookupParameters(f"{key!r}: a range is two values, first,last")
        if _is_year_lookup(parts) and any(_year_out_of_range(value) for value in values):
            raise IncorrectLookupParameters(f"{key!r}: a year outside 1-9999")


class GuardedChangeList(ChangeList):
    def get_filters(
        self, request: HttpRequest
    ) -> tuple[list[ListFilter], bool, dict[str, bool | str], bool, bool]:
        lookup_params_check(self.get_filters_params())
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            # The date hierarchy's end of 31 December 9999 (a year, month or day
            # later) is beyond Python's dates; a list filter's own bad value.
            raise IncorrectLookupParameters(error) from error


class GuardedModelAdmin(admin.ModelAdmin):
    """Base of every ModelAdmin of the project (see the module docstring)."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return GuardedChangeList

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(self._is_primary_key(value) for value in selected):
            # None: the changelist redirects back to itself with the message.
            self.message_user(request, NO_VALID_SELECTION, messages.WARNING)
            return None
        return super().response_action(request, queryset, *args, **kwargs)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        if NUL in object_id:
            return None  # "doesn't exist", as for any other id that cannot be one
        return super().get_object(request, object_id, from_field)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, str | list[str]]:
        """The add page's initial data from its query string, without values no
        field can show: a NUL, or a string for a date and time (the split
        widget takes only a datetime)."""
        initial = super().get_changeform_initial_data(request)
        for name, value in list(initial.items()):
            values = value if isinstance(value, list) else [value]
            if any(NUL in item for item in values) or isinstance(
                self._model_field(name), models.DateTimeField
            ):
                del initial[name]
        return initial

    def _model_field(self, name: str) -> Any:
        try:
            return self.opts.get_field(name)
        except FieldDoesNotExist:
            return None

    def _is_primary_key(self, value: str) -> bool:
        """Whether ``value`` can be a primary key of the model (without a query)."""
        pk = self.opts.pk
        if not value or NUL in value:
            return False
        try:
            pk.run_validators(pk.to_python(value))
        except ValidationError:
            return False
        return True
