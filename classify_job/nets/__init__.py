"""Model architectures, one file each. Importing this package registers their custom layers,
which Keras' safe-mode loader needs before it can rebuild a saved model."""
