"""Request body parsers every API view shares: the charset of a text body, and
JSON that is valid Unicode and not nested beyond what any body here needs.

A bad body is a 400 ``parse_error`` naming what is wrong, before the view runs:
nothing is decided, stored or logged for it, and nothing in it can reach the
renderer (which cannot write an unpaired surrogate as UTF-8: a 500) or a walk
over the data that recursion would break.
"""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Mapping
from json import JSONDecodeError
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, parsers
from rest_framework.utils import json

# Levels of arrays and objects a JSON body may have. The deepest body the API
# takes has three (a lookup: body, records, record); Python's recursion limit,
# which the JSON decoder, DRF's serializers and repr() in an error message would
# each reach on a deep enough body, is far beyond.
MAX_JSON_DEPTH = 32

_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_VALID_UNICODE = "not valid Unicode (an unpaired surrogate)"

# Codecs Python decodes bytes with that are not character sets: backslash
# escapes (which can spell an unpaired surrogate), IDNA labels, and "undefined",
# which refuses everything. Bytes-to-bytes codecs (base64, rot13, zlib...) are not
# text encodings at all, and their CodecInfo says so.
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined"})


def body_encoding(parser_context: Mapping[str, Any] | None) -> str:
    """The character set a text body is decoded with: the Content-Type's
    ``charset`` (Django keeps only one Python knows), else DEFAULT_CHARSET.
    A codec that is not a character set is a 400."""
    encoding = str((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET)
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise exceptions.ParseError(f"charset={encoding} is not a known character set.") from None
    if not codec._is_text_encoding or codec.name in _NOT_CHARSETS:
        raise exceptions.ParseError(f"charset={encoding} is not a character set; send UTF-8.")
    return encoding


def has_unpaired_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone UTF-16 surrogate, which no UTF encodes:
    an escape (JSON's ``\\ud800``) or a codec such as UTF-7 can produce one."""
    return _SURROGATE.search(text) is not None


def _depth_check(data: Any) -> None:
    """Level by level, so that no depth of the data can exhaust the stack."""
    level = [data] if isinstance(data, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise exceptions.ParseError(
                f"JSON parse error - nested too deeply (more than {MAX_JSON_DEPTH} levels "
                "of arrays and objects)."
            )
        level = [
            item
            for value in level
            for item in (value.values() if isinstance(value, dict) else value)
            if isinstance(item, dict | list)
        ]


def _unpaired_surrogate_at(value: Any, path: str) -> str | None:
    """Where the first string or key holding an unpaired surrogate is, in
    document order, as ``records[0].id``; None when there is none. Recursive:
    only called on data whose depth _depth_check has bounded."""
    if isinstance(value, str):
        return path if has_unpaired_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if has_unpaired_surrogate(key):
                return f"{path or 'the body'}, key {key!a}"
            found = _unpaired_surrogate_at(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _unpaired_surrogate_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing what it lets through to fail later: a body
    nested deeper than MAX_JSON_DEPTH (or than the decoder's recursion can go),
    a string or key that is not valid Unicode, a charset that is not one."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = body_encoding(parser_context)
        try:
            text = codecs.getreader(encoding)(stream).read()
            parse_constant = json.strict_constant if self.strict else None
            data = json.loads(text, parse_constant=parse_constant)
        except JSONDecodeError as error:
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        except ValueError:
            # The one other ValueError of the decoder: an integer longer than
            # Python converts (its message advises raising the limit).
            raise exceptions.ParseError(
                f"JSON parse error - a number has more than {sys.get_int_max_str_digits()} digits."
            ) from None
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON parse error - nested too deeply (more than {MAX_JSON_DEPTH} levels "
                "of arrays and objects)."
            ) from None
        _depth_check(data)
        # Without an escape or a character outside ASCII, no string can hold a
        # surrogate: a 10 000-record lookup is not walked string by string.
        if "\\u" in text or (not text.isascii() and has_unpaired_surrogate(text)):
            where = _unpaired_surrogate_at(data, "")
            if where is not None:
                raise exceptions.ParseError(
                    f"JSON parse error - {where or 'the body'}: {_NOT_VALID_UNICODE}."
                )
        return data
