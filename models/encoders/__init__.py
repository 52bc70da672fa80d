"""Backbones. Importing this package registers every built-in encoder (one module each)."""

from models.encoders import edsr, rdn  # noqa: F401
