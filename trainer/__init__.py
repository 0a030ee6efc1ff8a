"""Stage two of Storyboard: video data, the CLIP video model, training and evaluation."""
