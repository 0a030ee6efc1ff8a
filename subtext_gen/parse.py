"""An LLM reply -> exactly N sub-texts, or the reason why not.

Accepted shapes: numbered lists (`1.`, `1)`, `(1)`, `Step 1:`, `Shot 1 -`), bullets, JSON
arrays or objects (possibly in a code fence), inline numbered lists, and one item per line.
Prose around a list (a preamble, a closing remark) is dropped; items lose their numbering,
quotes, markdown emphasis and trailing punctuation; duplicates are dropped. More than N
items keep the first N unless `strict`; fewer than N is a failure.
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


@dataclass(frozen=True)
class ParsedReply:
    sub_texts: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def clean_item(text: str) -> str:
    """Strip numbering, labels, quotes, emphasis and trailing punctuation from one item."""
    text = text.strip()
    match = _ITEM.match(text)
    if match:
        text = match.group("text")
    text = text.replace("**", "").replace("__", "")
    text = _LABEL.sub("", text)
    text = text.strip().strip("\"'`\u201c\u201d\u2018\u2019").strip()
    text = re.sub(r"(?:[\s.;,:!]+|,?\s+(?:and|then))$", "", text)
    return re.sub(r"\s+", " ", text)


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
