"""Patch sets cut from real images with ground-truth homographies: the geometry
(:mod:`.geometry`), detection and the Brown / HPatches writers (:mod:`.writer`), and the cached,
CPU-independent builds with their command line (:mod:`.portable`,
``python -m descriptors.data.real {brown,hpatches}``)."""
