"""The video-side model: CLIP visual backbone, temporal module, coarse/fine aggregation."""

# What other packages may import (see trainer/__init__.py).
__all__ = ["aggregation", "video_clip"]
