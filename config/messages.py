"""Error messages shared by the API and the upload parsers: lists bounded (an
error names the first few problems and counts the rest, so its size does not
grow with the request it refuses), and unknown keys named with the field they
misspell."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence

# How many problems of one kind an error lists before "... and N more".
LISTED_MAX = 20


def listing(items: Sequence[str], separator: str = ", ") -> str:
    """``items`` joined, the first LISTED_MAX only, then how many more there are."""
    shown = separator.join(items[:LISTED_MAX])
    more = len(items) - LISTED_MAX
    return f"{shown} … and {more} more" if more > 0 else shown


# How alike (difflib's ratio) a key and a field must be for the key to be taken
# for a misspelling of the field: "exception" and "exceptions" are 0.95 alike,
# "hash" and "hashes" 0.8, "expires" and "exceptions" 0.59.
_CLOSE_ENOUGH = 0.8


def field_spelling(name: str) -> str:
    """A field name without case, spaces, ``-`` or ``_``: the spellings of one
    field a client may send by mistake (``SHA256``, ``pdq-quality``, ``url ``)."""
    return re.sub(r"[\W_]+", "", name.casefold())


def unknown_field_message(
    key: str, names: Iterable[str], misplaced: Mapping[str, str] | None = None
) -> str:
    """Why ``key`` is refused: it is none of ``names``. Names the field it
    misspells (``SHA256``, the singular ``exception``, ``pdq_qualty``), or the
    one it belongs to (``misplaced``: spellings of keys that belong elsewhere),
    if any, else lists ``names``."""
    names = list(names)
    spelling = field_spelling(key)
    spellings = {field_spelling(name): name for name in names}
    suggestion = spellings.get(spelling) or (misplaced or {}).get(spelling)
    if suggestion is None:  # a typo, or the singular of a plural
        close = difflib.get_close_matches(spelling, spellings, n=1, cutoff=_CLOSE_ENOUGH)
        suggestion = spellings[close[0]] if close else None
    if suggestion is not None:
        return f'"{key[:64]}" is not a field; did you mean "{suggestion}"?'
    return f'"{key[:64]}" is not a field; allowed: {", ".join(names)}.'
