"""The learning loop (review export and import, the model registry and promotion, drift)."""
