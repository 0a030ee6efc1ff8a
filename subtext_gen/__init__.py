"""Stage one of Storyboard: an LLM writes candidate sub-texts for each class (`generate`,
with the backends in `llm/` and the prompts in `prompts`); TPP scores them and keeps the
best set (`score`); `artifacts` keeps the candidates and writes the scored files.

Other packages (`storyworld`, the benchmarks) may import the modules in `__all__`; a
module's names without a leading underscore are its public ones. Nothing is imported here,
so `python -m subtext_gen --help` stays fast (tests/project/test_layers_public.py)."""

__all__ = ["artifacts", "generate", "llm", "prompts", "score"]
