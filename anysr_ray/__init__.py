"""Scale-out on Ray Serve: the AnySR FastAPI app as a Ray Serve deployment (``pip install 'anysr-serve[ray]'``).

Kept out of ``server`` on purpose: the core server never imports Ray (tests/test_ray_serve.py checks
it), and only this package does. docs/deploy.md#ray-serve says when to choose Ray over Kubernetes.
"""
