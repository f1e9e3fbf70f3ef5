"""modelyard's pipeline: turns pinned Hugging Face models into reproducible, lazily-pullable OCI images."""

__version__ = "0.1.0"
