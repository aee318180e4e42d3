"""Patch data: Brown-layout subsets (:mod:`.brown`), training samplers (:mod:`.samplers`), the
datamodule (:mod:`.datamodule`), the HPatches release (:mod:`.hpatches`) and the real-data sets
cut from image sequences (:mod:`.real`)."""
