"""`python -m storyworld.world [out]`: write the world into `out`, or without `out` the
shipped candidate sets (`write_candidates`); prints what and how long."""

import sys
import time
from pathlib import Path

from .write import write_candidates, write_world

start = time.perf_counter()
if len(sys.argv) > 1:
    result = write_world(Path(sys.argv[1]))
    print(f"{result.videos} videos, written={result.written}", end=" ")
else:
    print(write_candidates(), end=" ")
print(f"in {time.perf_counter() - start:.1f}s")
