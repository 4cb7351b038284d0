"""The loss settings of unifocal trainer folders in ``unifocal compare`` and ``unifocal sweep`` tables and plots
(unifocal.run_settings): two settings of one trainer are told apart. No nnU-Net run needed: fake results
folders with the files a training leaves (fold_*/validation predictions, fold_*/unifocal_loss.json)."""

import json

import numpy as np
import pytest
from PIL import Image

from unifocal.cli import main
from unifocal.run_settings import describe_record, layout_with_settings, read_run_settings

DATASET = "Dataset005_Settings"
META = {"labels": {"background": 0, "organ": 1}, "file_ending": ".png", "channel_names": {"0": "grey"},
        "numTraining": 4}


def record(gamma, proposal=None, ds="nnunet"):
    return {"trainer": "x", "loss": "asymmetric_unified_focal",
            "params": {"weight": 0.5, "delta": 0.6, "gamma": gamma, "rare_classes": None},
            "ds_scheme": ds, "ds_weights": [2 / 3, 1 / 3, 0.0], "sources": {}, "gamma_proposal": proposal,
            "ignored": {}}


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def results_tree(root, records):
    """<results>/<Dataset>/<trainer>__nnUNetPlans__2d with two folds; fold_k/unifocal_loss.json = records[trainer][k]."""
    for case in range(4):
        reference = np.zeros((6, 6), np.uint8)
        reference[1:4, 1:4] = 1
        png(root / "pre" / DATASET / "gt_segmentations" / f"case{case}.png", reference)
    for index, (trainer, per_fold) in enumerate(records.items()):
        folder = root / "results" / DATASET / f"{trainer}__nnUNetPlans__2d"
        for case in range(4):
            prediction = np.zeros((6, 6), np.uint8)
            prediction[1:4, 1:4 - index] = 1
            png(folder / f"fold_{case % 2}" / "validation" / f"case{case}.png", prediction)
        (folder / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
        (folder / "dataset.json").write_text(json.dumps(META))
        for fold, content in enumerate(per_fold):
            if content is not None:
                (folder / f"fold_{fold}" / "unifocal_loss.json").write_text(
                    content if isinstance(content, str) else json.dumps(content))
    return root / "results" / DATASET


def test_describe_record():
    assert describe_record(record(0.3)) == ("asymmetric_unified_focal: weight 0.5, delta 0.6, gamma 0.3, "
                                            "rare_classes default; ds nnunet")
    auto = record([0.1, 0.55, 0.8123456], proposal={"rule": "frequency"}, ds=[0.5, 0.5, 0.0])
    assert describe_record(auto) == ("asymmetric_unified_focal: weight 0.5, delta 0.6, gamma auto (0.1, 0.55, "
                                     "0.8123), rare_classes default; ds (0.5, 0.5, 0)")


def test_read_run_settings_per_trainer_folder(tmp_path):
    results = results_tree(tmp_path, {"Same": [record(0.3), record(0.3)], "Mixed": [record(0.3), record(0.5)],
                                      "Broken": ["{", None], "nnUNetTrainer": [None, None]})
    assert read_run_settings(results / "Same__nnUNetPlans__2d") == describe_record(record(0.3))
    mixed = read_run_settings(results / "Mixed__nnUNetPlans__2d")
    assert mixed == f"fold_0: {describe_record(record(0.3))}; fold_1: {describe_record(record(0.5))}"
    assert read_run_settings(results / "Mixed__nnUNetPlans__2d", ["1"]) == describe_record(record(0.5))
    assert read_run_settings(results / "Broken__nnUNetPlans__2d") .startswith("unreadable unifocal_loss.json (not valid JSON")
    assert read_run_settings(results / "nnUNetTrainer__nnUNetPlans__2d") is None


def test_compare_shows_the_settings_of_each_trainer_folder(tmp_path, capsys, monkeypatch):
    trainers = {"UnifiedFocalTrainer": [record(0.5)] * 2,
                "UnifiedFocalTrainer_auto": [record([0.1, 0.6], proposal={"rule": "frequency"})] * 2,
                "nnUNetTrainer": [None, None]}
    results = results_tree(tmp_path, trainers)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    out = tmp_path / "out"
    assert main(["compare", str(results), "--baseline", "nnUNetTrainer", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    defaults, auto = describe_record(record(0.5)), describe_record(trainers["UnifiedFocalTrainer_auto"][0])
    assert f"method UnifiedFocalTrainer_auto: {results / 'UnifiedFocalTrainer_auto__nnUNetPlans__2d'} (4 files); " \
           f"loss {auto}" in printed
    table = (out / "table.md").read_text()
    section = table[table.index("### loss settings"):].splitlines()
    assert section[4:] == [f"| UnifiedFocalTrainer | {defaults} |", f"| UnifiedFocalTrainer_auto | {auto} |"]
    # six metric rows (DSC, IoU, recall, precision, HD95, NSD) of 2.6 inches, and one caption line per trainer
    # with settings: 2 x 0.17 + 0.1 inches more at 100 dpi
    assert Image.open(out / "boxplots.png").size[1] == round((6 * 2.6 + 2 * 0.17 + 0.1) * 100)


def test_layout_with_settings_adds_the_caption():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 3))
    fig.add_subplot()
    layout_with_settings(fig, {"a": "gamma 0.3", "b": "gamma 0.5"})
    assert fig.get_figheight() == pytest.approx(3 + 2 * 0.17 + 0.1)
    assert [t.get_text() for t in fig.texts] == ["a: gamma 0.3\nb: gamma 0.5"]
    plain = plt.figure(figsize=(4, 3))
    layout_with_settings(plain, {})
    assert plain.get_figheight() == 3 and not plain.texts
    plt.close("all")


def test_sweep_table_and_plot_show_the_settings(tmp_path):
    from types import SimpleNamespace

    from unifocal.report import evaluate
    from unifocal.runs.sweep_report import dsc_table, fold_summary, plot_sweep

    reference = {f"case{i}": tmp_path / "ref" / f"case{i}.png" for i in range(2)}
    runs = {"gamma=0.3": tmp_path / "a", "gamma=0.5": tmp_path / "b"}
    for i in range(2):
        truth = np.zeros((6, 6), np.uint8)
        truth[1:4, 1:4] = 1
        png(reference[f"case{i}"], truth)
        png(runs["gamma=0.3"] / f"case{i}.png", truth)
        png(runs["gamma=0.5"] / f"case{i}.png", np.zeros_like(truth))
    evaluation = evaluate({k: {f"case{i}": v / f"case{i}.png" for i in range(2)} for k, v in runs.items()},
                          reference, [1], ["organ"])
    evaluation.settings = {"gamma=0.3": describe_record(record(0.3)), "gamma=0.5": describe_record(record(0.5))}
    summary = fold_summary(evaluation, ["0"])
    table = dsc_table(summary, {}, None, evaluation, list(runs), {}, 1)
    assert f"| gamma=0.3 | 1.000 +- 0.000 | {describe_record(record(0.3))} |" in table
    assert f"| gamma=0.5 | 0.000 +- 0.000 | {describe_record(record(0.5))} |" in table
    grid = [SimpleNamespace(label=label, trainer="UnifiedFocalTrainerShort", gamma=gamma, delta=None, weight=None)
            for label, gamma in zip(runs, [0.3, 0.5])]
    plot = plot_sweep(summary, grid, [], evaluation, tmp_path / "sweep.png")
    assert Image.open(plot).size[1] == round((3.6 + 2 * 0.17 + 0.1) * 100)
