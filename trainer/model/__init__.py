"""The video-side model: CLIP visual backbone, temporal module, coarse/fine aggregation."""
