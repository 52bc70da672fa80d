"""Arbitrary-scale upsamplers. Importing this package registers every built-in decoder (one module each)."""

from models.decoders import arbsr, liif, metasr  # noqa: F401
