"""Check each part against its authors' public implementation: same mapped weights, same function.

Each module here checks one part (``liif``, ``rdn``, ``metasr``, ``srno``, ``arbsr``). It builds our model at
full width with ASE at its identity initialisation (so the AnySR additions are exactly neutral), maps our
weights onto the public model's parameter names, runs both on the same input, and reports the largest
absolute difference. The public code runs in a subprocess from a local checkout of its repository
(:mod:`tools.public_code.runner`), because its package names (``models``, ``model``) clash with ours; none
of it is copied into this repository. Run ``python -m tools.public_code --help``.
"""
