"""Video coding: coding structure, motion, the per-frame encodes of a sequence, its bitstream."""
