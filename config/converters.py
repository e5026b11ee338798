"""Path converters of the project's routes; registered on import.

``any_uuid``: a public id (a UUID) in a path, its hex digits in either case. A
UUID is case-insensitive, and Django's ``uuid`` converter takes lowercase only:
an id written in uppercase was a 404. Every route naming an object by its
public id uses ``<any_uuid:...>``; the schema documents the parameter as a
UUID (``PATH_CONVERTER_OVERRIDES`` in config/settings.py).
"""

from __future__ import annotations

from django.urls import register_converter
from django.urls.converters import UUIDConverter

ANY_UUID = "any_uuid"


class AnyCaseUUIDConverter(UUIDConverter):
    """A UUID in either case; ``to_python`` gives the same ``uuid.UUID`` for both
    and ``reverse`` writes lowercase."""

    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


register_converter(AnyCaseUUIDConverter, ANY_UUID)
