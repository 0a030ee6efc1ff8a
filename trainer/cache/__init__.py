"""The frozen-feature cache: its layout (`store`), how runs read it (`dataset`) and how
it is built (`build`)."""
