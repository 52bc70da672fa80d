"""Where the served model comes from: the weights file, or (loudly) random initialisation.

The weights file carries its own spec (``models.checkpoint``), so nothing here knows the
architecture; the checkpoint's SHA-256 lets ``/v1/model`` name exactly which file answers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.anysr import AnySR, build_model
from models.spec import ModelSpec
from server.service import ModelInfo

logger = logging.getLogger("anysr.server.model")

UNTRAINED_BANNER = (
    "!!! SERVING AN UNTRAINED MODEL (--allow-untrained): random weights, outputs are NOT super-resolved; "
    "for smoke tests only !!!"
)


class WeightsNotFound(FileNotFoundError):
    """The weights file is missing and untrained serving was not allowed."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"weights file {path} not found; train a model (anysr train) or point --weights/ANYSR_WEIGHTS at one, "
            "or pass --allow-untrained to serve random weights for a smoke test"
        )


#: The directory holding the ``server`` package: a source checkout's root (or an editable install of
#: one), where the shipped ``weights/`` live. In a regular install it is site-packages, with no weights.
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def weights_candidates(weights: Path, data_dir: Path | None) -> list[Path]:
    """Where a weights path may be, in the order tried.

    An absolute path is only itself. A relative one (the default, ``weights/anysr-edsr-liif.safetensors``)
    is tried against ``data_dir`` (``ANYSR_DATA_DIR``), the working directory, then the source tree,
    so ``anysr serve`` finds the shipped weights from any directory of a checkout or an editable
    install, and an installed package finds them under a data directory named by the environment.
    """
    if weights.is_absolute():
        return [weights]
    bases = ([data_dir] if data_dir is not None else []) + [Path.cwd(), SOURCE_ROOT]
    return list(dict.fromkeys((base / weights).absolute() for base in bases))


def resolve_weights(weights: Path, data_dir: Path | None) -> tuple[Path | None, list[Path]]:
    """The first candidate that is a file (None if none is), and every candidate looked at."""
    candidates = weights_candidates(weights, data_dir)
    return next((path for path in candidates if path.is_file()), None), candidates


def count_parameters(model: AnySR) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def load_model(weights: Path, allow_untrained: bool) -> tuple[AnySR, ModelInfo]:
    """Load ``weights`` (spec included), or build the default spec at random if allowed."""
    if weights.is_file():
        from models.checkpoint import load_checkpoint  # only needed when a file is served

        model, checkpoint = load_checkpoint(weights, map_location="cpu")
        info = ModelInfo(
            spec=checkpoint.spec,
            parameters=checkpoint.parameter_count,
            sha256=checkpoint.sha256,
            path=str(checkpoint.path),
            untrained=False,
            training=dict(checkpoint.training),
        )
        logger.info("loaded %s: %s (sha256 %s, %d parameters)", weights, model.spec.label, info.sha256, info.parameters)
        return model, info
    if not allow_untrained:
        raise WeightsNotFound(weights)
    logger.warning(UNTRAINED_BANNER)
    model = build_model(ModelSpec())
    return model, untrained_info(model)


def untrained_info(model: AnySR) -> ModelInfo:
    return ModelInfo(spec=model.spec, parameters=count_parameters(model), sha256=None, path=None, untrained=True)


def injected_info(model: AnySR) -> ModelInfo:
    """Info for a model handed to ``create_app`` directly (tests, embedding)."""
    return ModelInfo(spec=model.spec, parameters=count_parameters(model), sha256=None, path=None, untrained=False)
