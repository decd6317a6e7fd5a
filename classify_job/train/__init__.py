"""Folder dataset -> model bundle: index and decode, fit or fine-tune, evaluate, plot, write the bundle."""
