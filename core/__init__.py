"""What the families share: data errors, file checksums and caches, cross-rank gathers, device
labels and timers, and the dataset readers that two families use. Imports no family."""
