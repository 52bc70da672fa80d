"""Arbitrary-scale upsamplers. Importing this package registers every built-in decoder (one module each)."""

from models.decoders import arbsr, liif, metasr, srno  # noqa: F401
