"""The core both stages stand on, importing neither: the one CLIP loader, its identity and
text features (`clip`), class lists and the class-name rule (`classes`), the shipped data
(`resources`, `data/`), the read side of the sub-text artifact (`subtexts`), the user-error
type, the CLI runner, the range check of numeric flags and the reason a weights-only load
refused a file (`errors`); files written atomically and the artifacts folder (`files`); the
choice of device (`device`); Hugging Face Hub weights (`hub`); folder locks (`locks`); the
version and the paper the project implements (`about`)."""
