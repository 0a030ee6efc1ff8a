"""Stage one of Storyboard: sub-text candidates from an LLM (`generate`, backends in
`llm/`), scored and kept by TPP (`score`), in artifacts (`artifacts`).

`__all__` names the modules other packages (`storyworld`, the benchmarks) may import; a
module's names without a leading underscore are its public ones. Nothing is imported here,
so `python -m subtext_gen --help` stays fast (tests/project/test_layers_public.py)."""

__all__ = ["artifacts", "generate", "llm", "prompts", "score"]
