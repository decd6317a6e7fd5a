"""Model architectures, one file each. Importing this package registers their custom layers,
which Keras' safe-mode loader needs before it can rebuild a saved model."""

from classify_job.nets.fast_layers import FastDepthwiseConv2D, FastPointwiseConv2D
from classify_job.nets.head_ensemble import HeadEnsemble
from classify_job.nets.inference import FlipTTA

__all__ = ["FastDepthwiseConv2D", "FastPointwiseConv2D", "FlipTTA", "HeadEnsemble"]
