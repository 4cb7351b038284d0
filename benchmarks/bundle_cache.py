"""Host memory that one case takes in a MONAI bundle's training cache (``CacheDataset`` keeps the output of the
deterministic transforms). Not a test: ``python -m benchmarks.bundle_cache [--bundle kits_unified_focal]``.

The case is synthetic but shaped like a KiTS19 CT: 512 x 512 x 108 voxels at 0.78 x 0.78 x 3 mm, int16 HU,
air (-1000) around an elliptic body (40 HU) holding a kidney label; the bundle's own transforms resample it
to 1 mm, scale and crop it to the body. Prints the bytes of the cached image and label, and what the label
would take as float32 (the dtype the bundle cached before it kept labels as uint8).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def synthetic_ct(folder: Path, shape=(512, 512, 108), spacing=(0.78, 0.78, 3.0)) -> dict:
    import nibabel as nib

    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [s / 2 for s in shape]
    body = ((grid[0] - centre[0]) / 220) ** 2 + ((grid[1] - centre[1]) / 160) ** 2 <= 1
    body = np.broadcast_to(body, shape)
    image = np.where(body, 40, -1000).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[300:360, 200:260, 40:70] = 1
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(folder / "image.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / "label.nii.gz"))
    return {"image": str(folder / "image.nii.gz"), "label": str(folder / "label.nii.gz")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="kits_unified_focal")
    args = parser.parse_args()
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(str(REPO / "unifocal" / "bundles" / args.bundle / "configs" / "train.json"))
    transforms = config.get_parsed_content("validate#preprocessing")  # the deterministic part, as cached
    with tempfile.TemporaryDirectory() as folder:
        cached = transforms(synthetic_ct(Path(folder)))
    image, label = cached["image"], cached["label"]
    as_float = label.numel() * 4
    print(f"cached image {tuple(image.shape)} {image.dtype}: {image.nbytes / 2**20:.0f} MiB")
    print(f"cached label {tuple(label.shape)} {label.dtype}: {label.nbytes / 2**20:.0f} MiB (float32: {as_float / 2**20:.0f} MiB)")
    print(f"per case: {(image.nbytes + label.nbytes) / 2**20:.0f} MiB (with a float32 label: {(image.nbytes + as_float) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
