"""The LLM backends of `generate`; other packages may use the file backend (their own
sub-texts, no LLM)."""

__all__ = ["files"]
