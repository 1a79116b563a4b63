"""The IMDS emulator's pytest fixture, imported as a user's conftest.py would."""

from runctl.testing.imds import imds  # noqa: F401
