"""AnySR Serve: the HTTP service around the shared-weight AnySR model.

Layers: ``routes`` → ``service`` (validate, plan) → ``scheduler`` (pure width choice) and ``batcher``
(cross-request tile batching) → ``runner`` (a model on one device) → ``models``. ``create_app`` in
``server.app`` builds it all; this package file imports nothing, so ``server.scheduler`` stays free of
torch and the probes.
"""
