"""Region-search data: the MNIST reader, the synthetic canvases, logo pairs and the datamodules."""
