"""The plotting back end: matplotlib's pyplot drawing into files only (reports and the
study's charts), never onto a display."""

from __future__ import annotations


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg back end; imported on first use, since
    matplotlib is slow to import and most commands draw nothing."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt
