"""What both stages share, and nothing else: the user-error type, the CLI runner, the
range check of numeric flags and the reason a weights-only load refused a file
(`errors`); files written atomically and the artifacts folder (`files`); the choice of
device (`device`); the version and the paper the project implements (`about`)."""
