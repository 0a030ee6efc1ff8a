"""The frozen-feature cache: its layout (`store`), how runs read it (`dataset`) and how
it is built (`build`)."""

# What other packages may import (see trainer/__init__.py).
__all__ = ["build", "store"]
