"""Training: data sampling (:mod:`models.training.data`) and the two-stage loop (:mod:`models.training.train`)."""
