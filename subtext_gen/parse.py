"""An LLM reply -> exactly N sub-texts, or the reason why not.

Accepted shapes: numbered lists (`1.`, `1)`, `(1)`, `Step 1:`, `Shot 1 -`), bullets, JSON
arrays or objects (possibly in a code fence), inline numbered lists, and one item per line.
Prose around a list (a preamble, a closing remark) is dropped; items lose their numbering,
quotes around the whole item (quoted phrases inside stay), markdown emphasis and trailing
punctuation; duplicates are dropped. More than N items keep the first N unless `strict`;
fewer than N is a failure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_ITEM = re.compile(
    r"^\s*(?:\(?\d{1,2}[.):]|[-*\u2022\u2023\u25e6\u2013]|(?:step|shot|scene|frame|moment)"
    r"\s*\d{1,2}\s*[:.)\-\u2013]?)\s+(?P<text>\S.*)$",
    re.I,
)
_INLINE_NUMBER = re.compile(r"(?:^|\s)\(?\d{1,2}[.)]\s+")
_LABEL = re.compile(r"^(?:step|shot|scene|frame|moment|action)\s*\d{0,2}\s*[:.\-\u2013]\s*", re.I)
_TRAILING = re.compile(r"(?:[\s.;,:!]+|,?\s+(?:and|then))$")
_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019"}
_QUOTE_CHARS = set(_QUOTE_PAIRS) | set(_QUOTE_PAIRS.values())


@dataclass(frozen=True)
class ParsedReply:
    sub_texts: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def clean_item(text: str) -> str:
    """Strip numbering, labels, wrapping quotes, emphasis and trailing punctuation from one item.

    The one cleaner of listed items: LLM replies (`parse_subtexts`) and imported files
    (`llm/files.py`) both go through it.
    """
    text = text.strip()
    match = _ITEM.match(text)
    if match:
        text = match.group("text")
    text = text.replace("**", "").replace("__", "")
    text = _TRAILING.sub("", _LABEL.sub("", text).strip())
    text = _TRAILING.sub("", _LABEL.sub("", unquote(text)))
    return re.sub(r"\s+", " ", text)


def unquote(text: str) -> str:
    """Remove quotes that wrap the whole of `text` (repeatedly); quotes inside stay.

    `"say hi"` -> `say hi`; `say "hi"` and `"a" or "b"` stay as they are;
    `"say "hi""` -> `say "hi"`.
    """
    text = text.strip()
    if text and all(ch in _QUOTE_CHARS for ch in text):
        return ""  # quotes around nothing
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1] and _wraps(text):
        text = text[1:-1].strip()
    return text


def _wraps(text: str) -> bool:
    """Whether the quote opening `text` is closed by its last character, not before.

    A quote between two letters or digits (`don't`) is an apostrophe; distinct opening and
    closing quotes (curly ones) are counted; a straight quote opens where it starts the
    text, follows a space, a bracket or another opening quote, and closes elsewhere.
    """
    opener, closer = text[0], _QUOTE_PAIRS[text[0]]
    depth, last_opened = 0, -2
    for i, ch in enumerate(text):
        if ch not in (opener, closer):
            continue
        if 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            continue  # an apostrophe: don't, don\u2019t
        if opener != closer:
            depth += 1 if ch == opener else -1
        elif i < len(text) - 1 and (
            i == 0 or text[i - 1].isspace() or text[i - 1] in "([{" or last_opened == i - 1
        ):
            depth, last_opened = depth + 1, i
        else:
            depth -= 1
        if depth == 0 and i < len(text) - 1:
            return False  # the opening quote closes before the end
    return depth == 0


def _json_items(text: str) -> list[str] | None:
    for opener, closer in (("[", "]"), ("{", "}")):
        start, end = text.find(opener), text.rfind(closer)
        if start == -1 or end <= start:
            continue
        try:
            value = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            continue
        if isinstance(value, (list, dict)):
            return _flatten_json(value)
    return None


def _flatten_json(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _flatten_json(v)]
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"steps": [...]} or {"class": [...]}
            return _flatten_json(lists[0])
        return [v for v in value.values() if isinstance(v, str)]
    return []


def _line_items(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1:  # everything on one line: "1. a 2. b 3. c" or "a; b; c"
        (line,) = lines
        if len(_INLINE_NUMBER.findall(line)) >= 2:
            parts = _INLINE_NUMBER.split(line)
            return parts if _INLINE_NUMBER.match(line) else parts[1:]  # drop a preamble
        return line.split(";")
    listed = [line for line in lines if _ITEM.match(line)]
    return listed or lines


def parse_subtexts(raw: str | None, n: int, strict: bool = False) -> ParsedReply:
    """Parse a reply into exactly `n` sub-texts; `strict` refuses replies with more."""
    if raw is None or not raw.strip():
        return ParsedReply((), "empty reply")
    fenced = _FENCE.search(raw)
    body = fenced.group(1) if fenced else raw
    items = _json_items(body)
    return items_to_subtexts(_line_items(body) if items is None else items, n, strict)


def items_to_subtexts(items: list[str], n: int, strict: bool = False) -> ParsedReply:
    """Clean and de-duplicate listed items, then require `n` of them (the first `n` kept)."""
    seen: set[str] = set()
    sub_texts = []
    for item in items:
        text = clean_item(item)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            sub_texts.append(text)
    if len(sub_texts) < n or (strict and len(sub_texts) > n):
        return ParsedReply(tuple(sub_texts), f"expected {n} sub-texts, found {len(sub_texts)}")
    return ParsedReply(tuple(sub_texts[:n]))
