"""Helpers that write what the tests and the benchmarks run on, and run it: the CLIs in a
subprocess or in process (`cli`), runs of the tiny list world (`list_runs`), videos in any
container (`videos`), a scored miniature dataset in the generic list layout
(`list_dataset`), a loopback OpenAI-compatible server (`openai_server`), `cache-features`
under torchrun (`torchrun`), and a Hugging Face Hub out of reach with a local cache (`hub`).
Neither `tests/` nor `bench/` owns them; both import them from here (run from the
repository root)."""
