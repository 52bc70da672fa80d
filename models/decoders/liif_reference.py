"""LIIF's decoding written the original way, for equivalence tests and speed comparisons; never for serving.

:class:`models.decoders.liif.LIIFDecoder` computes LIIF's ``query_rgb`` in a cheaper order (the first MLP layer
applied once per LR pixel as a 3×3 convolution, an index gather per query). This module computes the same
function the way the LIIF paper's code does, so the two can be compared:

1. unfold the features 3×3 (``F.unfold``, padding 1): C·9 values per LR pixel;
2. for each of the 4 diagonal shifts of the local ensemble, move the query half an LR pixel, pick the
   nearest LR pixel with ``F.grid_sample(mode="nearest")``, both for the unfolded features and for the
   LR pixel-centre coordinates;
3. relative coordinate = query − picked centre, and the cell, both scaled by the feature size;
4. run the *whole* MLP on the concatenated C·9 + 2 + 2 input (580 values for 64 channels), once per shift;
5. blend the 4 predictions by area, each weighted by the area of the diagonally opposite one.

It reads the weights of an :class:`models.anysr.AnySR` (encoder and decoder MLP) at a given width, in slim
or paper mode, so any difference from the product path is a bug in one of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.anysr import AnySR, ScaleLike, scale_tensor
from models.coords import make_cell, make_coord
from models.decoders.liif import LIIFDecoder

#: LIIF's shift that keeps a query lying exactly on a cell border from being ambiguous.
_EPS_SHIFT = 1e-6


def reference_query_rgb(
    decoder: LIIFDecoder, features: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float
) -> torch.Tensor:
    """LIIF ``query_rgb``: RGB normalised to [-1, 1] at ``coord`` (B, Q, 2) from ``features`` (B, C, h, w).

    ``cell`` (B, Q, 2) holds output-pixel sizes in [-1, 1] units. Returns (B, Q, 3), the same quantity as
    ``decoder.query_normalised(decoder.prepare(features, lr, width, scale), coord, cell, width)``.
    """
    batch, channels, height, width_px = features.shape
    queries = coord.shape[1]
    unfolded = F.unfold(features, 3, padding=1).view(batch, channels * 9, height, width_px)
    # LR pixel centres as a 2-channel image, so grid_sample can pick them like features.
    centres = make_coord(height, width_px, device=features.device).to(features.dtype)
    centres = centres.reshape(height, width_px, 2).permute(2, 0, 1).unsqueeze(0).expand(batch, 2, height, width_px)
    # Half an LR pixel in [-1, 1] units, per axis.
    radius_y = 1 / height
    radius_x = 1 / width_px

    predictions = []
    areas = []
    for shift_y in (-1, 1):
        for shift_x in (-1, 1):
            shifted = coord.clone()
            shifted[..., 0] += shift_y * radius_y + _EPS_SHIFT
            shifted[..., 1] += shift_x * radius_x + _EPS_SHIFT
            shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
            # grid_sample wants (x, y) order and a (B, 1, Q, 2) grid.
            grid = shifted.flip(-1).unsqueeze(1)
            picked_features = F.grid_sample(unfolded, grid, mode="nearest", align_corners=False)
            picked_features = picked_features[:, :, 0, :].permute(0, 2, 1)
            picked_centres = F.grid_sample(centres, grid, mode="nearest", align_corners=False)
            picked_centres = picked_centres[:, :, 0, :].permute(0, 2, 1)

            rel_coord = coord - picked_centres
            rel_coord[..., 0] *= height
            rel_coord[..., 1] *= width_px
            rel_cell = cell.clone()
            rel_cell[..., 0] *= height
            rel_cell[..., 1] *= width_px
            inputs = torch.cat([picked_features, rel_coord, rel_cell], dim=-1)
            prediction = _run_mlp(decoder, inputs.view(batch * queries, -1), width)
            predictions.append(prediction.view(batch, queries, -1))
            areas.append(torch.abs(rel_coord[..., 0] * rel_coord[..., 1]) + 1e-9)

    total_area = torch.stack(areas).sum(dim=0)
    # The diagonal swap: each neighbour's prediction is weighted by the rectangle between the query and the
    # diagonally opposite neighbour, which is largest for the nearest neighbour (bilinear-style weights).
    areas[0], areas[3] = areas[3], areas[0]
    areas[1], areas[2] = areas[2], areas[1]
    result = torch.zeros_like(predictions[0])
    for prediction, area in zip(predictions, areas, strict=True):
        result = result + prediction * (area / total_area).unsqueeze(-1)
    return result


def reference_forward(
    model: AnySR, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float, scale: ScaleLike
) -> torch.Tensor:
    """The reference counterpart of :meth:`AnySR.forward`: RGB in [0, 1] units (unclamped), (B, Q, 3)."""
    width = model.check_width(width)
    features = model.encoder(lr, width, scale_tensor(scale, lr.shape[0], lr.device))
    return reference_query_rgb(model.decoder, features, coord, cell, width) * 0.5 + 0.5


@torch.inference_mode()
def reference_upscale(
    model: AnySR,
    lr: torch.Tensor,
    out_size: tuple[int, int],
    width: float,
    scale: tuple[float, float] | None = None,
    query_chunk: int = 65536,
) -> torch.Tensor:
    """The reference counterpart of :meth:`AnySR.upscale`: (B, 3, h, w) → (B, 3, H, W) clamped to [0, 1].

    Encodes once and queries ``query_chunk`` output pixels at a time, as LIIF's ``batched_predict`` does.
    """
    width = model.check_width(width)
    batch, _, height, width_px = lr.shape
    out_h, out_w = out_size
    if scale is None:
        scale = (out_h / height, out_w / width_px)
    features = model.encoder(lr, width, scale_tensor(scale, batch, lr.device))
    coord = make_coord(out_h, out_w, device=lr.device)
    cell = make_cell(out_h, out_w, coord.shape[0], device=lr.device)
    pieces = []
    for start in range(0, coord.shape[0], query_chunk):
        chunk_coord = coord[None, start : start + query_chunk].expand(batch, -1, -1)
        chunk_cell = cell[None, start : start + query_chunk].expand(batch, -1, -1)
        pieces.append(reference_query_rgb(model.decoder, features, chunk_coord, chunk_cell, width))
    rgb = (torch.cat(pieces, dim=1) * 0.5 + 0.5).clamp_(0, 1)
    return rgb.reshape(batch, out_h, out_w, 3).permute(0, 3, 1, 2).contiguous()


def _run_mlp(decoder: LIIFDecoder, inputs: torch.Tensor, width: float) -> torch.Tensor:
    """The full LIIF MLP on (N, C·9 + 4) inputs at ``width``: hidden layers cut to the decoder's sizes."""
    layers = decoder.mlp.layers
    hidden = inputs
    in_size = inputs.shape[1]
    for layer, out_size in zip(layers[:-1], decoder.hidden_sizes(width), strict=True):
        hidden = F.relu(F.linear(hidden, layer.weight[:out_size, :in_size], layer.bias[:out_size]))
        in_size = out_size
    return F.linear(hidden, layers[-1].weight[:, :in_size], layers[-1].bias)
