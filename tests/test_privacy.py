"""No photo bytes are persisted anywhere: no model field can hold them, uploads
leave no file behind, and the database holds no image data."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from django.apps import apps
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, models
from django.test import Client
from PIL import Image

from registry import keypoints, variants
from registry.models import Creator, Photo
from tests.factories import CreatorFactory
from tests.images import encode, jpeg_bytes

OUR_APPS = ("registry", "optout")
BYTE_FIELDS = (models.FileField, models.BinaryField)  # ImageField is a FileField
# Binary fields that hold packed hashes or records, never pixels: the derived
# variants' hashes (registry.variants.variants_pack, 42 bytes per variant) and
# colour signatures (colours_pack, 33 bytes per variant), the keypoints of the
# photo and its mirror image (registry.keypoints: corner positions on a 256 px
# grid and 32-byte binary descriptors, at most 128 each) — the dump test below
# checks what uploads store there —, and a batch chunk's records as JSON
# (hashes, ids, URLs; a webdataset image is hashed and never stored:
# tests/optout/test_batches.py checks the chunk of a shard).
HASH_BYTE_FIELDS = {
    "registry.Photo.variants",
    "registry.Photo.variant_colours",
    "registry.Photo.keypoints",
    "optout.Chunk.payload",
}


def test_no_model_of_ours_has_a_file_image_or_binary_field() -> None:
    our_models = [model for app in OUR_APPS for model in apps.get_app_config(app).get_models()]

    offending = [
        f"{model._meta.label}.{field.name} ({type(field).__name__})"
        for model in our_models
        for field in model._meta.get_fields()
        if isinstance(field, BYTE_FIELDS)
        and f"{model._meta.label}.{field.name}" not in HASH_BYTE_FIELDS
    ]

    assert {model._meta.label for model in our_models} >= {
        "registry.Creator",
        "registry.Photo",
        "registry.Claim",
        "registry.PersonalToken",
        "registry.ConsentEvent",
        "optout.Organization",
        "optout.OptOut",
    }
    assert offending == []


def test_the_byte_field_check_recognises_an_image_field() -> None:
    # The check above must be able to fail: an ImageField is caught by it.
    field = models.ImageField()

    assert isinstance(field, BYTE_FIELDS)


# --- Nothing reaches the disk or the database during uploads -------------------

# Signatures of photo files as raw bytes, as hex (bytea / text dumps) and as base64.
JPEG_SIGNATURES = (b"\xff\xd8\xff\xe0\x00\x10JFIF", b"ffd8ffe000104a464946", b"/9j/4AAQSkZJRg")
PNG_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"89504e470d0a1a0a", b"iVBORw0KGgo")


def _files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders if folder.exists() for path in folder.rglob("*")}


def _large_png(seed: int) -> bytes:
    # Noise does not compress: well above Django's 2.5 MB spill-to-temp-file size.
    pixels = np.random.default_rng(seed).integers(0, 256, size=(1100, 1100, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def _uploads() -> list[tuple[str, bytes, str]]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("in-zip.jpg", jpeg_bytes(31))
        zipped.writestr("in-zip.png", _large_png(32))
    return [
        ("small.jpg", jpeg_bytes(30), "image/jpeg"),
        ("large.png", _large_png(33), "image/png"),
        ("photos.zip", archive.getvalue(), "application/zip"),
    ]


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT
_writes: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    # Records every file this process opens for writing while a test watches.
    if _writes is None or event != "open":
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & _WRITE_FLAGS
    )
    if writing and not str(path).endswith(".pyc"):
        _writes.append(str(path))


sys.addaudithook(_audit)


@contextmanager
def files_written() -> Iterator[list[str]]:
    """Paths of the files opened for writing inside the block (audit hook: sees
    even a temporary file that is deleted again before the block ends)."""
    global _writes
    _writes = []
    try:
        yield _writes
    finally:
        _writes = None


@pytest.fixture
def watched_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every temporary file this process creates lands here while the test runs."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


@pytest.mark.django_db
def test_uploads_through_page_and_api_leave_no_file_in_temp_media_or_run_folders(
    watched_temp_dir: Path, client: Client
) -> None:
    large = _uploads()[1][1]
    assert len(large) > 2_621_440  # Django's default spill size: would go to a temp file
    creator = CreatorFactory()
    assert creator.user is not None
    client.force_login(creator.user)
    media = Path(settings.MEDIA_ROOT or settings.BASE_DIR / "media")
    watched = (watched_temp_dir, media, Path(settings.RUN_DIR))
    before = _files_under(*watched)
    page_files = [SimpleUploadedFile(n, b, content_type=t) for n, b, t in _uploads()[:2]]
    api_files = [SimpleUploadedFile(n, b, content_type=t) for n, b, t in _uploads()[2:]]

    with files_written() as written:
        page = client.post("/me/photos/upload/", {"photos": page_files})
        api = client.post("/api/v1/me/photos", {"files": api_files})

    assert written == []
    assert page.status_code == 200
    assert api.status_code == 201, api.content
    assert Photo.objects.filter(creator=creator).count() == 4
    assert _files_under(*watched) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_dump_of_the_database_after_uploads_holds_no_jpeg_or_png(client: Client) -> None:
    creator = CreatorFactory()
    assert creator.user is not None
    client.force_login(creator.user)
    files = [SimpleUploadedFile(n, b, content_type=t) for n, b, t in _uploads()]
    # Sanity: the signatures are what these files start with.
    assert files[0].read().startswith(JPEG_SIGNATURES[0])
    assert files[1].read().startswith(PNG_SIGNATURES[0])
    for file in files:
        file.seek(0)

    response = client.post("/me/photos/upload/", {"photos": files})

    assert response.status_code == 200
    assert Photo.objects.filter(creator=creator).count() == 4
    db = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""}
    dump = subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "--host",
            db["HOST"] or "127.0.0.1",
            "--port",
            str(db["PORT"] or 5432),
            "--username",
            db["USER"],
            db["NAME"],
        ],
        capture_output=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    photo_rows = [line for line in dump.splitlines() if creator_sha_in(line, creator)]
    assert photo_rows, "the dump must contain the registered photos' rows"
    # The binary columns hold packed variant hashes (42 bytes per variant) and
    # their colour signatures (33 bytes per variant), nothing else.
    rows = Photo.objects.filter(creator=creator).values_list(
        "variants", "variant_colours", "keypoints"
    )
    for packed, colours, photo_keypoints in rows:
        stored = variants.colours_unpack(bytes(colours), variants.variants_unpack(bytes(packed)))
        assert [v.name for v in stored] == list(variants.DERIVED_VARIANTS)
        assert len(colours) == 33 * len(stored) and all(v.colour for v in stored)
        # Two keypoint sets, exactly as registry.keypoints encodes them.
        sets = keypoints.decode_sets(bytes(photo_keypoints))
        assert len(sets) == 2
        assert len(photo_keypoints) == sum(3 + 34 * len(points) for points, _ in sets)
    for signature in JPEG_SIGNATURES + PNG_SIGNATURES:
        assert signature not in dump, signature


def creator_sha_in(line: bytes, creator: Creator) -> bool:
    return any(sha.encode() in line for sha in creator.photos.values_list("sha256", flat=True))
