"""Lists in messages, bounded: an error names the first few problems and
counts the rest, so its size does not grow with the request it refuses."""

from __future__ import annotations

from collections.abc import Sequence

# How many problems of one kind an error lists before "... and N more".
LISTED_MAX = 20


def listing(items: Sequence[str], separator: str = ", ") -> str:
    """``items`` joined, the first LISTED_MAX only, then how many more there are."""
    shown = separator.join(items[:LISTED_MAX])
    more = len(items) - LISTED_MAX
    return f"{shown} … and {more} more" if more > 0 else shown
