"""The pipeline's synchronous requests: a lookup of records, Spawning's URL
query, and a page of the change feed.

Lookups and URL queries decide against the registry at its newest version for
the organization of the key, so that organization's exceptions are honoured.
They use this process's matching engine with everything in it (optout.engine),
caught up to the newest version first, whatever OPTOUT_SHARDS says: shards
split the index between workers, not web processes (docs/scaling.md). Every
request leaves one audit row (optout.services.pipeline_request_record).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from config.messages import field_spelling
from optout import changes, services
from optout.engine import engine_for, registry_photos_at
from optout.manifests import OPTIONAL_FIELDS, RECORD_FIELDS
from optout.matching import (
    DEFAULT_THRESHOLDS,
    Invalid,
    Record,
    Thresholds,
    decide,
    record_parse,
)
from optout.matching.decide import Decision
from optout.models import OrganizationAPIKey, PipelineRequest
from optout.uses import AI_GENERATIVE_TRAINING

# Spawning's `optOut` means "do not train", and its callers declare no use.
# Deciding for generative AI training answers true whenever any training use is
# refused: refusing ai_training also refuses ai_generative_training, so this
# covers both kinds of opt-out, while data mining or inference alone does not
# count. datadiligence exists to keep opted-out images out of generative models.
URL_QUERY_USE = AI_GENERATIVE_TRAINING


@dataclass(frozen=True)
class LookupOutcome:
    registry_version: int
    decisions: list[Decision]

    def as_dict(self) -> dict[str, Any]:
        return {
            "registry_version": self.registry_version,
            "results": [decision.as_dict() for decision in self.decisions],
        }


_FIELDS = frozenset((*RECORD_FIELDS, *OPTIONAL_FIELDS))
# A record key that is not a field but spells one (or is colour's American
# spelling, or keypoints in the singular) is a mistake, not data of the
# caller's own: deciding the record without that value would miss what it
# would have matched, or let stand a match it would have refused. Other keys
# (caption, width...) are ignored, as a manifest's other columns are.
_MISSPELT = {field_spelling(name): name for name in _FIELDS} | {
    "color": "colour",
    "keypoint": "keypoints",
}


def _misspelt_field(raw: dict[Any, Any]) -> str | None:
    """Why the record cannot be decided as sent, if a key misspells a field."""
    for key in raw:
        if key in _FIELDS or not isinstance(key, str):
            continue
        field = _MISSPELT.get(field_spelling(key))
        if field is not None:
            return f'"{key[:64]}" is not a field; did you mean "{field}"?'
    return None


def lookup_record_parse(raw: Any, row: int) -> Record | Invalid:
    """record_parse, with the caller's id exactly as sent (results are matched
    to records by id) and a misspelt field invalid."""
    parsed = record_parse(raw, row=row, exact_id=True)
    if not isinstance(raw, dict):
        return parsed
    misspelt = _misspelt_field(raw)
    if misspelt is not None:
        return Invalid(parsed.id, misspelt, row)
    return parsed


def _decide(
    *, key: OrganizationAPIKey, use: str, raw_records: Sequence[Any], thresholds: Thresholds
) -> LookupOutcome:
    records = [lookup_record_parse(raw, row=index) for index, raw in enumerate(raw_records)]
    with engine_for().current() as registry:
        sized = replace(thresholds, registry_photos=registry_photos_at(registry.version))
        decisions = decide(
            records, registry, use=use, organization=key.organization_id, thresholds=sized
        )
    return LookupOutcome(registry.version, decisions)


def lookup_run(
    *, key: OrganizationAPIKey, use: str, records: Sequence[Any], thresholds: Thresholds
) -> LookupOutcome:
    """Decide every record (in order); a malformed one is ``invalid`` with its reason."""
    outcome = _decide(key=key, use=use, raw_records=records, thresholds=thresholds)
    services.pipeline_request_record(
        key=key,
        endpoint=PipelineRequest.Endpoint.LOOKUP,
        use=use,
        record_count=len(records),
        excluded_count=sum(d.decision == "exclude" for d in outcome.decisions),
        registry_version=outcome.registry_version,
    )
    return outcome


def urls_query(*, key: OrganizationAPIKey, urls: Sequence[str]) -> list[bool]:
    """Spawning's answer per URL, in order: True when the URL is opted out of
    training. A URL that cannot be parsed cannot match a claim: False."""
    outcome = _decide(
        key=key,
        use=URL_QUERY_USE,
        raw_records=[{"id": str(index), "url": url} for index, url in enumerate(urls)],
        thresholds=DEFAULT_THRESHOLDS,
    )
    opted_out = [decision.decision == "exclude" for decision in outcome.decisions]
    services.pipeline_request_record(
        key=key,
        endpoint=PipelineRequest.Endpoint.URLS,
        use=URL_QUERY_USE,
        record_count=len(urls),
        excluded_count=sum(opted_out),
        registry_version=outcome.registry_version,
    )
    return opted_out


def changes_list(
    *, key: OrganizationAPIKey, cursor: changes.ChangesCursor, limit: int
) -> changes.ChangesPage:
    """One page of the change feed for the key's organization."""
    page = changes.changes_page(organization_id=key.organization_id, cursor=cursor, limit=limit)
    services.pipeline_request_record(
        key=key,
        endpoint=PipelineRequest.Endpoint.CHANGES,
        record_count=len(page.changes),
        registry_version=page.registry_version,
    )
    return page
