"""The IMDS emulator's pytest fixture (runctl.testing.imds), for the EC2 source's tests."""

from runctl.testing.imds import imds  # noqa: F401
