"""The completion rule's scheduler tick and the job runner."""

from dicomnode.pipeline.runner import JobRunner

__all__ = ["JobRunner"]
