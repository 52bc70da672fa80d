"""Benchmark evaluation: metrics (:mod:`models.evaluation.metrics`) and the protocol (:mod:`models.evaluation.evaluate`)."""
