"""Chunk records move from a jsonb column to a bytea of JSON (``Chunk.payload``).

Pending chunks keep their records; done chunks are emptied (their results hold
what the batch reports). Reversible: the records of pending chunks go back.
"""

import json

from django.db import migrations, models


def records_to_payload(apps, schema_editor):
    Chunk = apps.get_model("optout", "Chunk")
    pending = Chunk.objects.filter(status="pending").only("pk", "records")
    for chunk in pending.iterator(chunk_size=10):
        payload = json.dumps(chunk.records, separators=(",", ":")).encode("ascii")
        Chunk.objects.filter(pk=chunk.pk).update(payload=payload)


def payload_to_records(apps, schema_editor):
    Chunk = apps.get_model("optout", "Chunk")
    for chunk in Chunk.objects.exclude(payload=b"").only("pk", "payload").iterator(chunk_size=10):
        Chunk.objects.filter(pk=chunk.pk).update(records=json.loads(bytes(chunk.payload)))


# lz4 instead of pglz for the TOASTed payloads (PostgreSQL 14+ built with lz4):
# compressing a 10 000-record chunk with pglz costs more than storing it.
LZ4 = """
DO $$ BEGIN
    ALTER TABLE optout_chunk ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR syntax_error THEN NULL;
END $$
"""


def payload_lz4(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(LZ4)


class Migration(migrations.Migration):
    dependencies = [
        ("optout", "0004_engine_state"),
    ]

    operations = [
        migrations.AlterField(
            model_name="chunk",
            name="records",
            field=models.JSONField(default=list),
        ),
        migrations.AddField(
            model_name="chunk",
            name="payload",
            field=models.BinaryField(default=b""),
        ),
        migrations.RunPython(payload_lz4, migrations.RunPython.noop),
        migrations.RunPython(records_to_payload, payload_to_records),
        migrations.RemoveField(
            model_name="chunk",
            name="records",
        ),
    ]
