"""Networks of the retrieval family: backbones, the global-descriptor net, regional attention."""
