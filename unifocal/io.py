"""Reading label maps (segmentations) from the file formats nnU-Net and MONAI use.

Every reader returns an integer :class:`numpy.ndarray` of label values, one case at a time; the heavy
image libraries are imported inside the functions that need them, so importing this module costs nothing.

============================  ==========================================================================
file ending                   reader
============================  ==========================================================================
``.nii.gz``, ``.nii``         nibabel (the array as stored, no reorientation)
``.nrrd``, ``.mha``, ``.mhd`` SimpleITK (``GetArrayFromImage``: axes in z, y, x order)
``.png``, ``.bmp``            PIL (single-channel images only)
``.tif``, ``.tiff``           tifffile when installed, else PIL
``.b2nd``                     blosc2: nnU-Net's preprocessed ``<case>_seg.b2nd`` (shape (1, *spatial),
                              -1 marks voxels outside the crop, which the counting code skips)
``.npy``, ``.npz``            numpy; ``.npz`` reads the ``seg`` array (nnU-Net's older preprocessed format)
============================  ==========================================================================

:func:`read_spacing` reads the voxel size from the header alone (nibabel's ``get_zooms``; SimpleITK's
``GetSpacing`` reversed to the z, y, x order of its arrays), for the surface distances of
:mod:`unifocal.metrics`; the other formats store none. :func:`read_geometry` reads where the voxels lie in the
world: the affine from array indices to RAS+ millimetres (nibabel's affine; SimpleITK's origin, direction and
spacing, converted from LPS), which :mod:`unifocal.report.geometry` compares between prediction and reference.

A label map has at most three axes longer than 1 (a 4D file is refused). Case identifiers are printable text:
bytes of a file name that are not UTF-8 are written as ``\\xNN`` escapes (:func:`printable`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

__all__ = [
    "InputError",
    "LABEL_ENDINGS",
    "split_ending",
    "read_label",
    "read_spacing",
    "read_geometry",
    "printable",
    "list_label_files",
    "iter_labels",
    "find_dataset_json",
    "load_dataset_json",
    "label_classes",
]

PathLike = Union[str, "os.PathLike[str]"]

# Longest first, so that ".nii.gz" wins over ".gz"-less matches.
LABEL_ENDINGS = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".mha",
    ".mhd",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".b2nd",
    ".npy",
    ".npz",
)

_SEG_SUFFIX = "_seg"


class InputError(ValueError):
    """A file that cannot be used as given (unreadable, truncated, not a label map, invalid JSON); the
    message names the file and the problem in one line."""


def _reason(error: BaseException) -> str:
    """The error's type and message on one line (reader libraries write multi-line messages)."""
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def split_ending(name: str) -> tuple[str, str]:
    """Split a file name into (stem, known ending), e.g. ``"case_001.nii.gz" -> ("case_001", ".nii.gz")``.

    Returns ``(name, "")`` for a name without a known label-file ending.
    """
    lower = name.lower()
    for ending in sorted(LABEL_ENDINGS, key=len, reverse=True):
        if lower.endswith(ending):
            return name[: -len(ending)], ending
    return name, ""


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.allclose(rounded, array, atol=1e-3, equal_nan=False):
            raise InputError(f"{printable(path)}: not a label map (non-integer values, dtype {array.dtype})")
        array = rounded
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{printable(path)}: not a label map (dtype {array.dtype})")
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise InputError(f"{printable(path)}: label values outside the int32 range")
    if sum(n > 1 for n in array.shape) > 3:
        raise InputError(f"{printable(path)}: a label map has at most 3 axes; got shape {array.shape} (a 4D image "
                         "or several channels: give one label map per case)")
    return array.astype(np.int32, copy=False)


def printable(text: Union[str, "os.PathLike[str]"]) -> str:
    """``text`` (a name or path) with the bytes that are not UTF-8 (Python's surrogate escapes for such file
    names) written as ``\\xNN``, so that it can be printed and written to a UTF-8 file."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def read_label(path: PathLike) -> np.ndarray:
    """Read one label map as an int32 array (see the module docstring for the formats).

    Raises:
        InputError: for an unknown file ending, a file the reader cannot read (truncated or corrupt, an
            object array), a multi-channel (e.g. RGB) image, or non-integer values; the message names the file.
    """
    path = Path(path)
    _, ending = split_ending(path.name)
    if ending not in LABEL_ENDINGS:
        raise InputError(f"{printable(path)}: unknown label file ending; supported: {', '.join(LABEL_ENDINGS)}")
    try:
        array = _read_array(path, ending)
    except InputError:
        raise
    except ImportError as error:
        raise InputError(f"{printable(path)}: reading {ending} files needs the Python module {error.name!r}, which is not "
                         "installed") from error
    except Exception as error:  # the readers raise anything from zlib.error to RuntimeError on a bad file
        raise InputError(f"{printable(path)}: cannot read this {ending} file ({_reason(error)})") from error
    return _as_labels(array, path)


def _read_array(path: Path, ending: str) -> np.ndarray:
    if ending in (".nii.gz", ".nii"):
        import nibabel

        image = nibabel.load(str(path))
        return np.asanyarray(image.dataobj)
    if ending in (".nrrd", ".mha", ".mhd"):
        import SimpleITK

        image = SimpleITK.ReadImage(str(path))
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{printable(path)}: a label map must have one component per voxel")
        return SimpleITK.GetArrayFromImage(image)
    if ending in (".png", ".bmp", ".tif", ".tiff"):
        return _read_2d(path, ending)
    if ending == ".b2nd":
        import blosc2

        return blosc2.open(urlpath=str(path), mode="r")[:]
    if ending == ".npy":
        return np.load(path)
    with np.load(path) as archive:
        if "seg" not in archive:
            raise InputError(f"{printable(path)}: an .npz label file must hold an array named 'seg'")
        return archive["seg"]


def read_spacing(path: PathLike) -> Optional[tuple[float, ...]]:
    """Voxel size (mm) along the axes of the array :func:`read_label` returns, from the file header only
    (the voxel data is not read); ``None`` for formats without one (2D images, ``.b2nd``, ``.npy``, ``.npz``).

    Raises:
        InputError: when the header cannot be read or its voxel size is not finite and positive.
    """
    path = Path(path)
    _, ending = split_ending(path.name)
    try:
        if ending in (".nii.gz", ".nii"):
            import nibabel

            spacing = nibabel.load(str(path)).header.get_zooms()
        elif ending in (".nrrd", ".mha", ".mhd"):
            import SimpleITK

            reader = SimpleITK.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            spacing = reader.GetSpacing()[::-1]
        else:
            return None
    except Exception as error:  # nibabel, SimpleITK and gzip each raise their own types for a broken file
        raise InputError(f"{printable(path)}: cannot read the image header ({_reason(error)})") from error
    spacing = tuple(float(v) for v in spacing)
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise InputError(f"{printable(path)}: the header's voxel size {spacing} is not finite and positive")
    return spacing


def read_geometry(path: PathLike) -> Optional[np.ndarray]:
    """The affine (``ndim + 1`` square) from the indices of :func:`read_label`'s array to RAS+ world coordinates
    in mm, from the header only; ``None`` for formats without one (2D images, ``.b2nd``, ``.npy``, ``.npz``).

    Raises:
        InputError: when the header cannot be read.
    """
    path = Path(path)
    _, ending = split_ending(path.name)
    try:
        if ending in (".nii.gz", ".nii"):
            import nibabel

            return np.asarray(nibabel.load(str(path)).affine, dtype=np.float64)
        if ending not in (".nrrd", ".mha", ".mhd"):
            return None
        import SimpleITK

        reader = SimpleITK.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        spacing, origin = np.array(reader.GetSpacing()), np.array(reader.GetOrigin())
        direction = np.array(reader.GetDirection()).reshape(len(spacing), len(spacing))
    except Exception as error:  # nibabel, SimpleITK and gzip each raise their own types for a broken file
        raise InputError(f"{printable(path)}: cannot read the image header ({_reason(error)})") from error
    # SimpleITK: world (LPS) = origin + direction @ (spacing * index), index in x, y, z order; its arrays are
    # z, y, x, so the columns are reversed; LPS -> RAS negates the first two world axes.
    n = len(spacing)
    affine = np.eye(n + 1)
    affine[:n, :n] = (direction * spacing)[:, ::-1]
    affine[:n, n] = origin
    affine[: min(n, 2)] *= -1
    return affine


def _read_2d(path: Path, ending: str) -> np.ndarray:
    if ending in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError:
            tifffile = None
        if tifffile is not None:
            array = tifffile.imread(str(path))
            if array.ndim == 3 and array.shape[-1] in (3, 4):
                raise InputError(f"{printable(path)}: a label map must be a single-channel image; got shape {array.shape}")
            return array
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA"):
            raise InputError(f"{printable(path)}: a label map must be a single-channel image; got mode {image.mode}")
        if image.mode == "P":
            # A palette image stores the label values as palette indices.
            return np.asarray(image)
        return np.asarray(image)


def list_label_files(folder: PathLike, ending: Optional[str] = None) -> dict[str, Path]:
    """Label files in ``folder`` by case identifier (the file name without its ending), sorted.

    Only files with a known ending are listed (``ending`` restricts them to one). In an nnU-Net
    preprocessed configuration folder (``<case>.b2nd`` images next to ``<case>_seg.b2nd`` labels) only
    the ``_seg`` files are listed, under the case identifier without ``_seg`` (the same for ``.npy``). Case
    identifiers are :func:`printable`. Raises ``ValueError`` when the folder holds label files of several endings
    (pass ``ending``) or none at all, or an entry named like a label file that is not a file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{printable(folder)}: not a folder")
    found: dict[str, dict[str, Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        stem, file_ending = split_ending(entry.name)
        if not file_ending or (ending is not None and file_ending != ending.lower()):
            continue
        if not entry.is_file():
            raise InputError(f"{printable(entry)}: has a label file's name but is not a file (a folder or a broken "
                             "link); move it out of the folder")
        found.setdefault(file_ending, {})[printable(stem)] = entry
    for array_ending in (".b2nd", ".npy"):
        files = found.get(array_ending, {})
        if any(stem.endswith(_SEG_SUFFIX) for stem in files):
            found[array_ending] = {
                stem[: -len(_SEG_SUFFIX)]: path for stem, path in files.items() if stem.endswith(_SEG_SUFFIX)
            }
    if not found:
        wanted = ending or ", ".join(LABEL_ENDINGS)
        raise ValueError(f"{printable(folder)}: no label files ({wanted})")
    if len(found) > 1:
        raise ValueError(
            f"{printable(folder)}: label files with several endings ({', '.join(sorted(found))}); choose one with --ending"
        )
    (files,) = found.values()
    return dict(sorted(files.items()))


def iter_labels(paths) -> Iterator[np.ndarray]:
    """Read label maps one at a time (for streaming statistics such as :func:`unifocal.gamma.count_labels`)."""
    for path in paths:
        yield read_label(path)


def find_dataset_json(folder: PathLike, levels: int = 3) -> Optional[Path]:
    """The nearest ``dataset.json`` in ``folder`` or up to ``levels`` parents above it, or None."""
    folder = Path(folder).resolve()
    for candidate in [folder, *list(folder.parents)[:levels]]:
        path = candidate / "dataset.json"
        if path.is_file():
            return path
    return None


def load_dataset_json(path: PathLike) -> dict:
    """Read an nnU-Net ``dataset.json`` (or plans file): a JSON object.

    Raises:
        InputError: when the file cannot be read, is not UTF-8 or valid JSON, gives a key twice or is not a
            JSON object (names the file).
    """
    from .run_settings import read_json_object

    return read_json_object(path, printable(path), InputError)


def label_classes(
    dataset: dict, source: PathLike = "dataset.json"
) -> tuple[list[str], list[Union[int, tuple[int, ...]]], Optional[int]]:
    """Class names, class definitions and the ignore label from an nnU-Net ``dataset.json``.

    Returns ``(names, classes, ignore_label)`` in the file's order, background included. A class is an int
    label value (label mode) or a tuple of label values (region mode: a region is the union of those
    labels; when any entry is a list, every entry is returned as a tuple). The ``"ignore"`` entry is
    returned separately and not as a class.

    Raises:
        InputError: naming ``source`` when ``labels`` is missing or holds anything but integer label values.
    """
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"{source}: no 'labels' mapping")

    def value(name: str, item) -> int:
        if isinstance(item, bool) or not isinstance(item, int):
            raise InputError(f"{source}: label {name!r} must be an integer label value (or a list of them); "
                             f"got {item!r}")
        return item

    names: list[str] = []
    classes: list[Union[int, tuple[int, ...]]] = []
    ignore_label = None
    for name, item in labels.items():
        if name == "ignore":
            ignore_label = value(name, item)
            continue
        names.append(str(name))
        if isinstance(item, (list, tuple)):
            classes.append(tuple(value(name, v) for v in item))
        else:
            classes.append(value(name, item))
    if any(isinstance(c, tuple) for c in classes):
        # Region mode (nnU-Net's has_regions): a plain value is a region of one label.
        classes = [c if isinstance(c, tuple) else (c,) for c in classes]
    return names, classes, ignore_label
