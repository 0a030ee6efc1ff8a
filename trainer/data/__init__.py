"""Video data: official dataset layouts, decord decoding, frame sampling, transforms, protocols."""
