"""Data of the retrieval family: test-set readers, image loading, downloads, tuple mining, datamodules."""
