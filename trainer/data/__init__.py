"""Video data: official dataset layouts, decord decoding, frame sampling, transforms, protocols."""

# What other packages may import (see trainer/__init__.py).
__all__ = ["transforms", "video"]
