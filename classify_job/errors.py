"""One exception hierarchy. Library code raises these; only the CLI maps them to messages and exit codes."""


class ClassifyJobError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(ClassifyJobError):
    """A path, flag or configuration value given by the user is wrong."""


class BundleError(ClassifyJobError):
    """A model bundle is missing, incomplete or cannot be loaded."""


class OutputError(ClassifyJobError):
    """The output location cannot be created or written."""


class LockHeldError(ClassifyJobError):
    """Another run holds the lock on the same output directory."""


class ErrorRateExceeded(ClassifyJobError):
    """The run finished, but more files failed than the configured limit allows."""


class Interrupted(ClassifyJobError):
    """The run was stopped by a signal after committing every finished row."""


class ImageDecodeError(ClassifyJobError):
    """One file could not be read as an image. Becomes an error row, never a crash."""


class DatasetError(ClassifyJobError):
    """A training or evaluation dataset is unusable (no classes, too few images, ...)."""


class WeightsError(ClassifyJobError):
    """Pretrained weights are missing, malformed or do not fit the architecture."""


class BackendError(ClassifyJobError):
    """Keras was imported with a backend other than JAX before this package could set it."""


class ExportError(ClassifyJobError):
    """An inference graph could not be exported, or did not match the Keras model; none is kept."""


class PromotionRefused(ClassifyJobError):
    """The promotion gate refused a candidate bundle; the registry's current model is unchanged.

    ``evidence`` is what the gate measured (a ``classify_job.loop.registry.Promotion``), for display."""

    def __init__(self, message: str, evidence: object = None) -> None:
        super().__init__(message)
        self.evidence = evidence
