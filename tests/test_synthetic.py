"""The synthetic imbalanced task (unifocal.synthetic) and the label readers (unifocal.io)."""

import json

import numpy as np
import pytest

from unifocal.io import label_classes, list_label_files, read_label, split_ending
from unifocal.synthetic import CLASS_NAMES, synthetic_case, synthetic_cases, write_nnunet_dataset


def test_seeded_and_reproducible():
    first = list(synthetic_cases(3, seed=7))
    again = list(synthetic_cases(3, seed=7))
    other = list(synthetic_cases(3, seed=8))
    for (i1, l1), (i2, l2) in zip(first, again):
        assert np.array_equal(i1, i2) and np.array_equal(l1, l2)
    assert not np.array_equal(first[0][1], other[0][1])


def test_case_content_and_imbalance():
    counts = np.zeros(3)
    for image, label in synthetic_cases(50, seed=0):
        assert image.shape == label.shape == (64, 64)
        assert image.dtype == label.dtype == np.uint8
        assert set(np.unique(label)) == {0, 1, 2}  # every case has an organ and at least one lesion
        assert image.std() > 10  # grey levels, not a binary mask
        counts += np.bincount(label.ravel(), minlength=3)
    frequency = counts / counts.sum()
    assert frequency[1] + frequency[2] < 0.05  # foreground well under 5 %
    assert frequency[1] > 3 * frequency[2]  # lesion much rarer than the organ
    assert frequency[2] > 0.001


def test_lesion_is_darker_than_organ_and_distractors_exist():
    rng = np.random.default_rng(3)
    image, label = synthetic_case(rng)
    organ_mean = image[label == 1].mean()
    lesion_mean = image[label == 2].mean()
    assert organ_mean - lesion_mean > 20
    # Dark unlabelled spots: background pixels in the body as dark as lesions exist.
    assert np.sum((label == 0) & (image < lesion_mean - 10) & (image > 40)) > 5


def test_size_scales_and_validates():
    image, label = synthetic_case(np.random.default_rng(0), size=96)
    assert image.shape == (96, 96)
    assert (label > 0).mean() < 0.05
    with pytest.raises(ValueError, match="size"):
        synthetic_case(np.random.default_rng(0), size=16)


def test_write_nnunet_dataset(tmp_path):
    dataset = write_nnunet_dataset(tmp_path, dataset_id=7, name="Tiny", num_train=4, num_test=2, seed=1)
    assert dataset.dataset_name == "Dataset007_Tiny"
    assert dataset.folder == tmp_path / "Dataset007_Tiny"
    assert len(dataset.train_cases) == 4 and len(dataset.test_cases) == 2
    meta = json.loads((dataset.folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert meta["file_ending"] == ".png" and meta["numTraining"] == 4 and meta["channel_names"] == {"0": "synthetic"}
    assert sorted(p.name for p in (dataset.folder / "imagesTr").iterdir())[0] == "case_000_0000.png"
    labels = list_label_files(dataset.folder / "labelsTr")
    assert list(labels) == list(dataset.train_cases)
    assert list(list_label_files(dataset.test_labels)) == list(dataset.test_cases)
    # The written PNGs hold exactly the generated arrays, training cases first.
    cases = list(synthetic_cases(6, seed=1))
    assert np.array_equal(read_label(labels["case_002"]), cases[2][1])
    assert np.array_equal(read_label(dataset.test_labels / "test_001.png"), cases[5][1])
    total = np.sum([np.bincount(c[1].ravel(), minlength=3) for c in cases[:4]], axis=0)
    assert dataset.frequencies == pytest.approx(tuple(total / total.sum()))
    assert label_classes(meta) == (list(CLASS_NAMES), [0, 1, 2], None)
    with pytest.raises(ValueError, match="dataset_id"):
        write_nnunet_dataset(tmp_path, dataset_id=1000)
    # A dataset is written only into a new folder: an existing one (a user's, or an earlier run's) is kept.
    with pytest.raises(FileExistsError, match="Dataset007_Tiny already exists and is not empty"):
        write_nnunet_dataset(tmp_path, dataset_id=7, name="Tiny", num_train=2, num_test=1, seed=2)
    assert np.array_equal(read_label(labels["case_002"]), cases[2][1])


def test_disks_task_regions_and_ignore_label(tmp_path):
    # The trainer tests' task: region labels, an ignore band in each training case, no zero pixel.
    dataset = write_nnunet_dataset(tmp_path, 9, "Disks", num_train=3, num_test=1, size=48, seed=0, task="disks",
                                   regions=True, ignore=True)
    meta = json.loads((dataset.folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "organ": [1, 2], "lesion": [2], "ignore": 3}
    assert meta["regions_class_order"] == [1, 2]
    labels = [read_label(path) for path in list_label_files(dataset.folder / "labelsTr").values()]
    assert all(set(np.unique(label)) == {0, 1, 2, 3} and (label == 3).sum() == 6 * 48 for label in labels)
    assert set(np.unique(read_label(dataset.test_labels / "test_000.png"))) == {0, 1, 2}
    image = read_label(dataset.folder / "imagesTr" / "case_000_0000.png")
    assert image.min() >= 1
    counted = np.concatenate([label[label != 3] for label in labels])
    assert dataset.frequencies == pytest.approx([np.mean(counted == k) for k in range(3)])
    assert 0.005 < dataset.frequencies[2] < dataset.frequencies[1] < 0.2


def test_read_label_formats(tmp_path):
    import nibabel
    import SimpleITK
    from PIL import Image

    array3d = np.random.default_rng(0).integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    nibabel.save(nibabel.Nifti1Image(array3d, np.eye(4)), tmp_path / "a.nii.gz")
    assert np.array_equal(read_label(tmp_path / "a.nii.gz"), array3d)
    # Float-stored integer labels are accepted; non-integers are not.
    nibabel.save(nibabel.Nifti1Image(array3d.astype(np.float32), np.eye(4)), tmp_path / "f.nii")
    assert read_label(tmp_path / "f.nii").dtype == np.int32
    nibabel.save(nibabel.Nifti1Image(array3d + 0.5, np.eye(4)), tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="not a label map"):
        read_label(tmp_path / "bad.nii.gz")
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(array3d), str(tmp_path / "b.nrrd"))
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(array3d), str(tmp_path / "c.mha"))
    assert np.array_equal(read_label(tmp_path / "b.nrrd"), array3d)
    assert np.array_equal(read_label(tmp_path / "c.mha"), array3d)
    Image.fromarray(array3d[0]).save(tmp_path / "d.png")
    assert np.array_equal(read_label(tmp_path / "d.png"), array3d[0])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel"):
        read_label(tmp_path / "rgb.png")
    np.savez(tmp_path / "e.npz", seg=array3d[None])
    assert np.array_equal(read_label(tmp_path / "e.npz"), array3d[None])
    with pytest.raises(ValueError, match="unknown"):
        read_label(tmp_path / "x.jpg")


def test_preprocessed_b2nd_listing(tmp_path):
    import blosc2

    seg = np.array([[[-1, 0, 1], [2, 1, 0]]], dtype=np.int8)
    blosc2.asarray(seg, urlpath=str(tmp_path / "case_1_seg.b2nd"))
    blosc2.asarray(seg.astype(np.float32), urlpath=str(tmp_path / "case_1.b2nd"))
    files = list_label_files(tmp_path)
    assert list(files) == ["case_1"] and files["case_1"].name == "case_1_seg.b2nd"
    assert np.array_equal(read_label(files["case_1"]), seg)


def test_list_label_files_rules(tmp_path):
    from PIL import Image

    assert split_ending("x.nii.gz") == ("x", ".nii.gz") and split_ending("y.txt") == ("y.txt", "")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "summary.json").write_text("{}")
    assert list(list_label_files(tmp_path)) == ["a", "b"]
    np.save(tmp_path / "c.npy", np.zeros(2))
    with pytest.raises(ValueError, match="several endings"):
        list_label_files(tmp_path)
    assert list(list_label_files(tmp_path, ".npy")) == ["c"]
    with pytest.raises(ValueError, match="no label files"):
        list_label_files(tmp_path, ".nrrd")
