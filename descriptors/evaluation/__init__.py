"""HPatches evaluation: the fast tasks (:mod:`.hpatches`) and the official logic they are
cross-checked against (:mod:`.hpatches_official`); the public face is :mod:`descriptors.evaluate`."""
