"""Prediction and reference of a case in the same voxel grid (world space).

Both files' headers place their voxels in the world (:func:`unifocal.io.read_geometry`). They are compared as
stored when their affines agree within :data:`GEOMETRY_TOLERANCE_MM`; a prediction stored with flipped or
permuted axes of the same grid (another orientation code, e.g. RAS vs LPS) is reoriented to the reference's
axes with nibabel's orientation tools (a lossless transpose and flip, never a resampling). Any other difference
(shape, voxel size, origin, an oblique direction) is an error naming the case, the files and what differs:
such a prediction needs resampling to the reference, which would change the scores. Files without a header
(2D images, arrays) are compared array to array, axes of length 1 dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..io import printable

__all__ = ["GEOMETRY_TOLERANCE_MM", "voxel_size", "to_reference_grid"]

# Largest difference (mm) between two affines' entries (voxel axes scaled by the voxel size, and the origin)
# that still counts as the same grid: float32 headers of one grid differ by far less.
GEOMETRY_TOLERANCE_MM = 1e-3


def voxel_size(affine: np.ndarray) -> tuple[float, ...]:
    """The voxel size (mm) along each array axis of an affine."""
    n = affine.shape[0] - 1
    return tuple(float(v) for v in np.linalg.norm(affine[:n, :n], axis=0))


def _difference(prediction: np.ndarray, reference: np.ndarray) -> str:
    n = reference.shape[0] - 1
    if not np.allclose(voxel_size(prediction), voxel_size(reference), rtol=0, atol=GEOMETRY_TOLERANCE_MM):
        return f"voxel size {_mm(voxel_size(prediction))} vs {_mm(voxel_size(reference))} mm"
    if not np.allclose(prediction[:n, n], reference[:n, n], rtol=0, atol=GEOMETRY_TOLERANCE_MM):
        return f"origin {_mm(prediction[:n, n])} vs {_mm(reference[:n, n])} mm"
    return "axis directions differ beyond a flip or permutation (an oblique or rotated grid)"


def _mm(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _reoriented(labels: np.ndarray, affine: np.ndarray, reference_affine: np.ndarray):
    """``labels`` and its affine in the axis order and directions of the reference's (nibabel)."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), io_orientation(reference_affine))
    return apply_orientation(labels, transform), affine @ inv_ornt_aff(transform, labels.shape)


def _with_axes(labels: np.ndarray, axes: int) -> np.ndarray:
    return labels.reshape(labels.shape + (1,) * (axes - labels.ndim)) if labels.ndim < axes else labels


def to_reference_grid(
    labels: np.ndarray, affine: Optional[np.ndarray], reference: np.ndarray,
    reference_affine: Optional[np.ndarray], case: str, path: Path, reference_path: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """A prediction's ``labels`` in the reference's voxel grid, and the reference as compared with it (axes of
    length 1 dropped from both for header-less files whose shapes differ only in those).

    Raises:
        ValueError: naming the case, both files and what differs.
    """
    where = f"case {case}: prediction {printable(path)} and reference {printable(reference_path)}"
    if affine is not None and reference_affine is not None:
        if affine.shape != reference_affine.shape:
            raise ValueError(f"{where} have {affine.shape[0] - 1} and {reference_affine.shape[0] - 1} axes")
        # A 2D NIfTI holds a 3D affine: its arrays get the missing axes (of length 1) while they are compared.
        axes = affine.shape[0] - 1
        stored, labels = labels.shape, _with_axes(labels, axes)
        if not np.allclose(affine, reference_affine, rtol=0, atol=GEOMETRY_TOLERANCE_MM):
            labels, affine = _reoriented(labels, affine, reference_affine)
        if labels.shape != _with_axes(reference, axes).shape:
            raise ValueError(f"{where} differ in shape: {stored} vs {reference.shape}")
        if not np.allclose(affine, reference_affine, rtol=0, atol=GEOMETRY_TOLERANCE_MM):
            raise ValueError(f"{where} lie in different voxel grids: {_difference(affine, reference_affine)}; "
                             "resample the prediction to the reference image")
        return labels.reshape(reference.shape), reference
    if labels.shape == reference.shape:
        return labels, reference
    if np.squeeze(labels).shape != np.squeeze(reference).shape:
        raise ValueError(f"{where} differ in shape: {labels.shape} vs {reference.shape}")
    return np.squeeze(labels), np.squeeze(reference)
