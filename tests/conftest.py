"""Fixtures shared by every test: tiny seeded models and the location of the shared data folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models import TINY_SPEC, AnySR, ModelSpec, build_model
from models.ase import AnyScaleEnhancement

# Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine the thread hand-off costs
# ~10x the work itself; one thread also fixes the reduction order, so results repeat exactly.
torch.set_num_threads(1)

TinyModelFactory = Callable[..., AnySR]


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same global RNG state, so random inputs do not depend on test order."""
    torch.manual_seed(0)


@pytest.fixture
def tiny_model_factory() -> TinyModelFactory:
    """``make(spec=TINY_SPEC, seed=0) -> AnySR``: a deterministic model in eval mode with *active* ASE.

    A freshly built model's ASE gates are exactly 1 (W2 = 0), which would hide any ASE slicing bug, so W2
    gets small random values. Seeding uses a forked RNG, leaving the global torch RNG untouched.
    """

    def make(spec: ModelSpec = TINY_SPEC, seed: int = 0) -> AnySR:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(spec)
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, AnyScaleEnhancement):
                        module.fc2.weight.normal_(0.0, 0.2)
                        module.fc2.bias.normal_(0.0, 0.2)
        return model.eval()

    return make


@pytest.fixture
def tiny_model(tiny_model_factory: TinyModelFactory) -> AnySR:
    """The default tiny model (TINY_SPEC, seed 0)."""
    return tiny_model_factory()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` folder beside the repository (or ``$ANYSR_SHARED_DIR``); skips the test when absent."""
    override = os.environ.get("ANYSR_SHARED_DIR")
    path = Path(override) if override else Path(__file__).resolve().parents[1] / ".." / "shared"
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set ANYSR_SHARED_DIR)")
    return path.resolve()
