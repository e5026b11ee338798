"""The consent ledger: one registry version per change, append-only in PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

import pytest
from django.db import DatabaseError, connection, transaction

from optout.models import OptOut
from optout.services import opt_out_file, opt_out_withdraw
from registry.ledger import LedgerEntry, entries_append, entry_append, registry_version_current
from registry.models import Channel, ConsentEvent, Creator, Photo
from registry.services import claim_add, photos_register_from_hashes
from registry.uploads import HashLine
from tests.factories import CreatorFactory


def hash_line(name: str = "") -> HashLine:
    return HashLine(
        sha256=secrets.token_hex(32),
        pdq=secrets.token_hex(32),
        phash=secrets.token_hex(8),
        filename=name,
    )


def register(creator: Creator, lines: list[HashLine]) -> list[str]:
    outcomes = photos_register_from_hashes(
        creator=creator, items=[(None, line) for line in lines], channel=Channel.API
    )
    return [outcome.status for outcome in outcomes]


def versions_of(kind: str) -> list[int]:
    return sorted(ConsentEvent.objects.filter(kind=kind).values_list("registry_version", flat=True))


@pytest.mark.django_db
def test_registering_new_photos_takes_one_contiguous_version_each() -> None:
    creator = CreatorFactory()
    before = registry_version_current()

    statuses = register(creator, [hash_line("a.jpg"), hash_line("b.jpg"), hash_line("c.jpg")])

    assert statuses == ["registered", "registered", "registered"]
    versions = sorted(
        Photo.objects.filter(creator=creator).values_list("registered_version", flat=True)
    )
    assert len(versions) == 3
    assert versions[0] > before
    assert versions == [versions[0], versions[0] + 1, versions[0] + 2]
    assert versions_of(ConsentEvent.Kind.PHOTO_REGISTERED) == versions
    assert registry_version_current() == versions[-1]
    events = ConsentEvent.objects.filter(creator_public_id=creator.public_id)
    assert {event.subject_public_id for event in events} == set(
        Photo.objects.filter(creator=creator).values_list("public_id", flat=True)
    )
    assert {(event.actor, event.channel) for event in events} == {("creator", "api")}


@pytest.mark.django_db
def test_registering_already_registered_photos_takes_no_version() -> None:
    creator = CreatorFactory()
    lines = [hash_line(), hash_line()]
    register(creator, lines)
    version = registry_version_current()
    event_count = ConsentEvent.objects.count()

    statuses = register(creator, lines)

    assert statuses == ["already_registered", "already_registered"]
    assert registry_version_current() == version
    assert ConsentEvent.objects.count() == event_count
    assert Photo.objects.filter(creator=creator).count() == 2


@pytest.mark.django_db
def test_registering_a_mix_takes_versions_only_for_the_new_photos() -> None:
    creator = CreatorFactory()
    known = hash_line()
    register(creator, [known])
    version = registry_version_current()

    statuses = register(creator, [hash_line(), known, hash_line()])

    assert statuses == ["registered", "already_registered", "registered"]
    new_versions = sorted(
        Photo.objects.filter(creator=creator, registered_version__gt=version).values_list(
            "registered_version", flat=True
        )
    )
    assert new_versions == [new_versions[0], new_versions[0] + 1]
    assert ConsentEvent.objects.filter(registry_version__gt=version).count() == 2


@pytest.mark.django_db
def test_adding_a_claim_takes_one_version_and_adding_it_again_none() -> None:
    creator = CreatorFactory()
    version = registry_version_current()

    claim, created = claim_add(
        creator=creator, kind="domain", value="WWW.Example.org", channel=Channel.WEB
    )
    again, created_again = claim_add(
        creator=creator, kind="domain", value="example.org", channel=Channel.WEB
    )

    assert (created, created_again) == (True, False)
    assert again.pk == claim.pk
    assert claim.value == "example.org"
    assert claim.registered_version > version
    events = list(ConsentEvent.objects.filter(registry_version__gt=version))
    assert [(e.kind, e.subject_public_id, e.registry_version) for e in events] == [
        (ConsentEvent.Kind.CLAIM_ADDED, claim.public_id, claim.registered_version)
    ]


@pytest.mark.django_db
def test_filing_and_withdrawing_an_opt_out_take_one_version_each() -> None:
    creator = CreatorFactory()
    version = registry_version_current()

    opt_out = opt_out_file(
        creator=creator, uses=["ai_training"], scope="all_photos", channel=Channel.WEB
    )
    withdrawn = opt_out_withdraw(creator=creator, opt_out_id=opt_out.public_id, channel=Channel.WEB)

    events = list(
        ConsentEvent.objects.filter(registry_version__gt=version).order_by("registry_version")
    )
    assert [(e.kind, e.subject_public_id) for e in events] == [
        (ConsentEvent.Kind.OPT_OUT_FILED, opt_out.public_id),
        (ConsentEvent.Kind.OPT_OUT_WITHDRAWN, opt_out.public_id),
    ]
    assert withdrawn.filed_version == events[0].registry_version
    assert withdrawn.withdrawn_version == events[1].registry_version
    assert withdrawn.withdrawn_version > withdrawn.filed_version


@pytest.mark.django_db
def test_withdrawing_twice_changes_nothing_the_second_time() -> None:
    creator = CreatorFactory()
    opt_out = opt_out_file(creator=creator, uses=["data_mining"], scope="all_photos", channel="web")
    first = opt_out_withdraw(creator=creator, opt_out_id=opt_out.public_id, channel="web")
    event_count = ConsentEvent.objects.count()
    version = registry_version_current()

    second = opt_out_withdraw(creator=creator, opt_out_id=opt_out.public_id, channel="api")

    assert second.withdrawn_version == first.withdrawn_version
    assert second.withdrawn_at == first.withdrawn_at
    assert ConsentEvent.objects.count() == event_count
    assert registry_version_current() == version
    stored = OptOut.objects.get(pk=opt_out.pk)
    assert (stored.withdrawn_version, stored.withdrawn_at) == (
        first.withdrawn_version,
        first.withdrawn_at,
    )


@pytest.mark.django_db
def test_an_unknown_channel_is_refused_and_nothing_is_written() -> None:
    creator = CreatorFactory()
    count = ConsentEvent.objects.count()

    with pytest.raises(ValueError, match="unknown channel 'carrier-pigeon'"):
        entry_append(
            entry=LedgerEntry(kind="claim_added", creator_public_id=creator.public_id),
            actor="creator",
            channel="carrier-pigeon",
            notice_version="1",
        )

    assert ConsentEvent.objects.count() == count


@pytest.mark.django_db(transaction=True)
def test_entries_outside_the_callers_transaction_are_refused() -> None:
    creator = CreatorFactory()

    with pytest.raises(RuntimeError, match="inside the caller's transaction"):
        entries_append(
            entries=[LedgerEntry(kind="claim_added", creator_public_id=creator.public_id)],
            actor="creator",
            channel="web",
            notice_version="1",
        )

    assert ConsentEvent.objects.count() == 0


# --- append-only at the database level ---------------------------------------


def ledger_event() -> ConsentEvent:
    creator = CreatorFactory()
    claim_add(creator=creator, kind="handle", value="instagram:@alice", channel=Channel.WEB)
    return ConsentEvent.objects.get(creator_public_id=creator.public_id)


def snapshot(event: ConsentEvent) -> tuple[object, ...]:
    stored = ConsentEvent.objects.get(pk=event.pk)
    return (stored.registry_version, stored.kind, stored.actor, stored.details)


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE registry_consentevent SET actor = 'forged' WHERE id = %s",
        "UPDATE registry_consentevent SET registry_version = registry_version + 1000 WHERE id = %s",
        "DELETE FROM registry_consentevent WHERE id = %s",
    ],
)
def test_raw_update_and_delete_of_the_ledger_fail_in_postgresql(statement: str) -> None:
    event = ledger_event()
    before = snapshot(event)

    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [event.pk])

    assert snapshot(event) == before


@pytest.mark.postgres
@pytest.mark.django_db
def test_orm_save_of_a_changed_event_fails_and_the_row_is_unchanged() -> None:
    event = ledger_event()
    before = snapshot(event)

    event.actor = "operator:mallory"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()

    assert snapshot(event) == before


@pytest.mark.postgres
@pytest.mark.django_db
def test_orm_queryset_update_of_the_ledger_fails_and_the_row_is_unchanged() -> None:
    event = ledger_event()
    before = snapshot(event)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ConsentEvent.objects.filter(pk=event.pk).update(details={"forged": True})

    assert snapshot(event) == before


@pytest.mark.postgres
@pytest.mark.django_db
def test_orm_delete_of_the_ledger_fails_and_the_row_is_still_there() -> None:
    event = ledger_event()
    before = snapshot(event)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        ConsentEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.delete()

    assert snapshot(event) == before


@pytest.mark.postgres
@pytest.mark.django_db
def test_registry_versions_come_from_the_postgresql_sequence() -> None:
    creator = CreatorFactory()
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_value FROM registry_version_seq")
        (last_value,) = cursor.fetchone()

    register(creator, [hash_line(), hash_line()])

    versions = versions_of(ConsentEvent.Kind.PHOTO_REGISTERED)
    assert versions[-2:] == [last_value + 1, last_value + 2]


# --- concurrency -------------------------------------------------------------


def run_in_threads(count: int, work: Callable[[int], list[str]]) -> list[list[str]]:
    """Run ``work(index)`` in ``count`` threads released together; re-raise errors."""
    barrier = threading.Barrier(count)
    results: list[list[str]] = [[] for _ in range(count)]
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work(index)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_of_the_same_photos_register_each_once() -> None:
    creator = CreatorFactory()
    lines = [hash_line(f"{i}.jpg") for i in range(5)]

    results = run_in_threads(2, lambda _: register(Creator.objects.get(pk=creator.pk), lines))

    assert sorted(results) == [["already_registered"] * 5, ["registered"] * 5]
    assert Photo.objects.filter(creator=creator).count() == 5
    assert ConsentEvent.objects.filter(kind=ConsentEvent.Kind.PHOTO_REGISTERED).count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_ledger_writers_get_unique_contiguous_versions() -> None:
    creators = [CreatorFactory() for _ in range(4)]

    run_in_threads(
        4,
        lambda i: register(
            Creator.objects.get(pk=creators[i].pk), [hash_line() for _ in range(10)]
        ),
    )

    versions = list(
        ConsentEvent.objects.order_by("registry_version").values_list(
            "registry_version", "creator_public_id"
        )
    )
    numbers = [number for number, _ in versions]
    assert len(numbers) == 40
    assert numbers == list(range(numbers[0], numbers[0] + 40))
    # Each upload's versions are one unbroken run: the advisory lock serialises writers.
    for creator in creators:
        own = [number for number, owner in versions if owner == creator.public_id]
        assert own == list(range(own[0], own[0] + 10))
