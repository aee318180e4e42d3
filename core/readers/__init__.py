"""Dataset readers used by more than one family."""
