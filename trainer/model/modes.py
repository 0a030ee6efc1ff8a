"""The head's aggregation modes (Eq. 5-12), without torch: the settings declare them."""

AGGREGATIONS = ("mean", "global", "coarse", "fine", "coarse+fine")
