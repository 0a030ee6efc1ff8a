"""What both stages share, and nothing else: the user-error type and the CLI runner
(`errors`), files written atomically and the artifacts folder (`files`), and the choice of
device (`device`)."""
