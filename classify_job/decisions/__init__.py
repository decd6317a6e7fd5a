"""Decisions: the rule that accepts a label or sends it to review (applied by classify), its
calibration and fitting on held-out predictions (run by train), and what the model card says of it."""
