"""classify-job: train image classifiers on folder datasets and classify huge image trees."""

from classify_job.runtime import force_jax_backend

force_jax_backend()

__version__ = "0.1.0"
