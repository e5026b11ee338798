"""Helpers of the web page tests: a signed-in creator, an uploaded file, a
hashes file posted."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from django.test import Client

from registry.models import Creator
from tests.factories import CreatorFactory


def signed_in(client: Client, creator: Creator | None = None) -> Creator:
    """``creator`` (a new one when None) signed in on ``client``."""
    creator = creator or CreatorFactory()
    assert creator.user is not None
    client.force_login(creator.user)
    return creator


def upload(name: str, data: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def hashes_file_posted(client: Client, content: bytes) -> HttpResponse:
    """``content`` uploaded as the photos page's hashes file (``hashes.jsonl``)."""
    return client.post(
        "/me/photos/hashes/",
        {"hashes": upload("hashes.jsonl", content, "application/jsonl")},
    )
