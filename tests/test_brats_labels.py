"""The BraTS label-convention check shared by `compare --challenge` and the BraTS bundle."""

import pytest

from unifocal.metrics import brats_et_label, check_brats_labels


@pytest.mark.parametrize("values, expected", [
    ({0, 1, 2, 4}, 4), ({0, 1, 2, 3}, 3), ({0, 1, 2}, None), ({0}, None), ([0, 2, 3, 3], 3),
])
def test_the_enhancing_tumour_label_is_read_from_the_data(values, expected):
    assert brats_et_label(values) == expected


@pytest.mark.parametrize("values, message", [({0, 3, 4}, "both 3 and 4"), ({0, 1, 5}, r"\[5\]")])
def test_values_no_brats_file_holds_are_errors(values, message):
    with pytest.raises(ValueError, match=message):
        brats_et_label(values)


def test_a_mismatched_et_label_names_the_files_the_setting_and_the_fix():
    with pytest.raises(ValueError, match=r"^labels/: the enhancing-tumour label 4 never occurs but 3 does: these "
                                         r"are BraTS 2023 labels; set et_label to 3$"):
        check_brats_labels({0, 1, 2, 3}, 4, "labels/", "et_label")
    check_brats_labels({0, 1, 2, 3}, 3, "labels/", "et_label")
    check_brats_labels({0, 1, 2}, 4, "labels/", "et_label")  # no enhancing tumour in these cases: accepted


@pytest.mark.parametrize("bad", [True, 2, "4", 4.0])
def test_the_et_label_setting_itself_is_checked(bad):
    with pytest.raises(ValueError, match="et_label must be 4 .* or 3"):
        check_brats_labels({0, 1}, bad, "labels/", "et_label")
