"""Developer tools that are neither the product nor its tests (checks against outside code, for instance)."""
