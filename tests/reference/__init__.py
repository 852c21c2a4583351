"""Reference forms moved out of production code (BEVDepth keeps its loop references beside its tests):
``model`` (lift, depth, radar splat, deformable sampling, decoding), ``data`` (radar accumulation, pillars)."""
