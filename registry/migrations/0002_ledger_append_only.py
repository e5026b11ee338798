"""The consent ledger is append-only at the database level, and registry
versions come from a sequence. PostgreSQL only: SQLite exists for `make run`.

TRUNCATE is not refused: it needs table ownership (an operator acting on the
schema, not the application) and Django's test flush relies on it.
"""

from django.db import migrations

FORWARD = [
    "CREATE SEQUENCE IF NOT EXISTS registry_version_seq AS bigint START 1",
    """
    CREATE OR REPLACE FUNCTION registry_consent_event_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the consent ledger is append-only: %% refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER registry_consent_event_no_update_delete
    BEFORE UPDATE OR DELETE ON registry_consentevent
    FOR EACH ROW EXECUTE FUNCTION registry_consent_event_append_only()
    """,
]
BACKWARD = [
    "DROP TRIGGER IF EXISTS registry_consent_event_no_update_delete ON registry_consentevent",
    "DROP FUNCTION IF EXISTS registry_consent_event_append_only()",
    "DROP SEQUENCE IF EXISTS registry_version_seq",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]
    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
