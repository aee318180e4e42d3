"""Patch sets cut from real images with ground-truth geometry: homography sequences (the geometry
in :mod:`.geometry`, detection and the Brown / HPatches writers in :mod:`.writer`), calibrated
multi-view point tracks (:mod:`.tracks`), the leave-one-sequence-out folds (:mod:`.protocols`),
and the cached, CPU-independent builds with their command line (:mod:`.portable`,
``python -m descriptors.data.real {brown,hpatches}``)."""
