"""runctl: run ML training jobs that survive losing their machine."""

__version__ = "0.1.0"
