"""The runner: protocol against a naive per-image loop, resume, shards, random baseline, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.evaluation import RunSettings, discover, load_shards, run_perturbation, summarize
from attngrad.evaluation.data import LabelResolver

METHODS = ["gae", "raw_attention", "random"]


def _settings(methods=METHODS, **kwargs):
    options = dict(batch_size=3, eval_batch_size=5, workers=0, progress=False)
    options.update(kwargs)
    return RunSettings(list(methods), **options)


def _run(explainer, data, out, limit=None, methods=METHODS, **kwargs):
    dataset = discover(data, explainer.labels, limit=limit)
    return run_perturbation(explainer, dataset, out, _settings(methods, **kwargs))


def _naive_hits(explainer, path, label, method, descending, maps=None):
    """One image at a time, from the protocol's words: upsample, sort, zero pixels, normalise, top-1.

    ``path`` is an image file or a picture (e.g. a stitched one)."""
    pre = explainer.adapter.preprocessor
    from attngrad.io import load_image

    unit = pre.to_unit([load_image(path)])
    if maps is None:
        maps = explainer.explain(pre.normalize(unit), target=label, method=method).maps
    h, w = unit.shape[-2:]
    scores = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False).flatten().numpy()
    order = np.argsort(-scores if descending else scores, kind="stable")
    hits = []
    for tenth in range(1, 10):
        count = int(tenth * h * w // 10)
        image = unit.clone().view(3, -1)
        image[:, order[:count]] = 0.0
        with torch.no_grad():
            logits = explainer.adapter.model(pixel_values=pre.normalize(image.view(1, 3, h, w))).logits
        hits.append(int(logits.argmax()) == label)
    return hits


def test_results_match_a_naive_per_image_loop(tiny_explainer, image_dir, tmp_path):
    summary = _run(tiny_explainer, image_dir, tmp_path / "out", limit=None)
    raw = load_shards(tmp_path / "out")
    assert raw["index"].tolist() == list(range(8))
    for i in (0, 4, 7):
        path, label = image_dir / raw["path"][i], int(raw["label"][i])
        assert label == i % 5
        for method in ("gae", "random"):
            assert raw[f"{method}.positive.correct"][i].tolist() == _naive_hits(tiny_explainer, path, label, method, True)
            assert raw[f"{method}.negative.correct"][i].tolist() == _naive_hits(tiny_explainer, path, label, method, False)
    # curves and AUCs from the raw hits, computed here
    hits0 = (raw["pred0"] == raw["label"]).astype(float)
    for method in METHODS:
        for direction in ("positive", "negative"):
            curve = np.concatenate([[hits0.mean()], raw[f"{method}.{direction}.correct"].mean(0)])
            entry = summary["methods"][method][direction]
            assert entry["curve"] == pytest.approx(curve.tolist())
            assert entry["auc"] == pytest.approx(100 * 0.1 * (curve.sum() - (curve[0] + curve[-1]) / 2))
    assert summary["images"] == 8 and summary["complete"]
    assert summary["accuracy_at_0"] == pytest.approx(hits0.mean())
    out = tmp_path / "out"
    for name in ("results.json", "results.csv", "results.md", "curves.png", "per_image.npz"):
        assert (out / name).stat().st_size > 0
    assert "| gae |" in (out / "results.md").read_text()
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 4 * len(METHODS)  # 2 directions x 2 measures
    assert "insertion" not in summary["methods"]["gae"]


def _naive_probabilities(explainer, path, label, maps, insert):
    """Insertion (or deletion) for one image from its words: rank by the upsampled map, paste the top
    pixels into the blurred image (torchvision's Gaussian blur, 11 x 11, sigma 5) or set them to 0."""
    from torchvision.transforms.functional import gaussian_blur

    from attngrad.io import load_image

    pre = explainer.adapter.preprocessor
    unit = pre.to_unit([load_image(path)])
    h, w = unit.shape[-2:]
    base = gaussian_blur(unit, [11, 11], [5.0, 5.0]).view(3, -1) if insert else torch.zeros(3, h * w)
    scores = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False).flatten().numpy()
    order = np.argsort(-scores, kind="stable")
    probs = []
    for tenth in range(0, 11):
        top = order[: tenth * h * w // 10]
        image = unit.clone().view(3, -1)
        if insert:
            image, source = base.clone(), image
            image[:, top] = source[:, top]
        else:
            image[:, top] = 0.0
        with torch.no_grad():
            logits = explainer.adapter.model(pixel_values=pre.normalize(image.view(1, 3, h, w))).logits
        probs.append(float(logits.softmax(-1)[0, label]))
    return probs


def test_insertion_and_deletion_match_a_naive_per_image_loop(tiny_explainer, image_dir, tmp_path):
    pytest.importorskip("torchvision")
    summary = _run(tiny_explainer, image_dir, tmp_path / "out", insertion_deletion=True)
    raw = load_shards(tmp_path / "out")
    curves = {"insertion": [], "deletion": []}
    for i in range(8):
        path, label = image_dir / raw["path"][i], int(raw["label"][i])
        maps = tiny_explainer.explain(path, target=label, method="gae").maps
        for direction in curves:
            curves[direction].append(_naive_probabilities(tiny_explainer, path, label, maps, direction == "insertion"))
    for direction, per_image in curves.items():
        per_image = np.array(per_image)
        inner = raw["gae.insertion.prob"] if direction == "insertion" else raw["gae.positive.prob"]
        assert np.allclose(inner, per_image[:, 1:10], atol=1e-5)
        entry = summary["methods"]["gae"][direction]
        assert entry["curve"] == pytest.approx(per_image.mean(0).tolist(), abs=1e-5)
        assert entry["auc"] == pytest.approx(100 * np.trapezoid(per_image.mean(0), dx=0.1), abs=1e-3)
        assert entry["higher_is_better"] is (direction == "insertion") and len(entry["percent"]) == 11
    out = tmp_path / "out"
    from attngrad.evaluation import compare_methods

    paired = compare_methods(out, "gae", "random")
    for direction in ("insertion", "deletion"):
        assert paired[direction]["gae"] == pytest.approx(summary["methods"]["gae"][direction]["auc"])
        assert paired[direction]["random"] == pytest.approx(summary["methods"]["random"][direction]["auc"])
    assert "insertion AUC, probability (higher is better)" in (out / "results.md").read_text()
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * len(METHODS) and rows[0].split(",")[-1] == "at_100"
    assert any(r.startswith("gae,insertion,probability,") for r in rows)


def test_predicted_class_is_explained_on_request(tiny_explainer, image_dir, tmp_path):
    _run(tiny_explainer, image_dir, tmp_path / "out", explain="predicted")
    raw = load_shards(tmp_path / "out")
    assert (raw["target"] == raw["pred0"]).all()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["explained_class"] == "predicted"


def test_resume_equals_uninterrupted(tiny_explainer, image_dir, tmp_path):
    full = _run(tiny_explainer, image_dir, tmp_path / "full")
    assert _run(tiny_explainer, image_dir, tmp_path / "cut", max_batches=1) is None  # stopped after one batch
    shards = sorted(p.name for p in (tmp_path / "cut" / "shards").iterdir())
    assert shards == ["batch-000000.npz"]
    (tmp_path / "cut" / "shards" / ".batch-000001.npz.partial").write_bytes(b"half a file")  # the batch in flight
    partial = summarize(tmp_path / "cut")  # what is done so far can be summarised, and says so
    assert partial["complete"] is False and partial["images"] == 3
    assert (tmp_path / "cut" / "results.md").read_text().startswith("(partial run)")
    with pytest.raises(AttngradError, match="--resume"):
        _run(tiny_explainer, image_dir, tmp_path / "cut")
    with pytest.raises(AttngradError, match="settings differ"):
        _run(tiny_explainer, image_dir, tmp_path / "cut", resume=True, batch_size=4)
    run_file = tmp_path / "cut" / "run.json"  # a run stored before insertion_deletion existed resumes
    run_file.write_text(json.dumps({k: v for k, v in json.loads(run_file.read_text()).items() if k != "insertion_deletion"}))
    with pytest.raises(AttngradError, match="settings differ \\(insertion_deletion\\)"):
        _run(tiny_explainer, image_dir, tmp_path / "cut", resume=True, insertion_deletion=True)
    resumed = _run(tiny_explainer, image_dir, tmp_path / "cut", resume=True)
    assert resumed["methods"] == full["methods"]
    a, b = load_shards(tmp_path / "full"), load_shards(tmp_path / "cut")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert summarize(tmp_path / "cut")["methods"] == full["methods"]  # recomputed without the model


def test_resume_refuses_images_added_or_relabelled(tiny_explainer, image_dir, tmp_path):
    table = tmp_path / "classes.tsv"

    def run(**kwargs):
        dataset = discover(image_dir, tiny_explainer.labels, table)
        return run_perturbation(tiny_explainer, dataset, tmp_path / "out", _settings(**kwargs))

    table.write_text("".join(f"{i}\tn{i:08d}\tLABEL_{i}\n" for i in range(5)))
    assert run(max_batches=1) is None
    (image_dir / "n00000050_LABEL_3.png").write_bytes((image_dir / "n00000000_LABEL_0.png").read_bytes())
    with pytest.raises(AttngradError, match=r"images differ .*1 added: n00000050_LABEL_3.png"):
        run(resume=True)  # one image more, same settings
    (image_dir / "n00000050_LABEL_3.png").unlink()
    table.write_text("".join(f"{i}\tn{i:08d}\tLABEL_{i}\n" for i in (0, 1, 2, 4)) + "4\tn00000003\tLABEL_4\n")
    with pytest.raises(AttngradError, match=r"images differ .*1 relabelled: n00000003_LABEL_3.png"):
        run(resume=True)  # the same files, n00000003 now class 4
    table.write_text("".join(f"{i}\tn{i:08d}\tLABEL_{i}\n" for i in range(5)))
    assert run(resume=True)["images"] == 8


def test_random_baseline_does_not_depend_on_the_batch(tiny_explainer, image_dir):
    paths = sorted(str(p) for p in image_dir.iterdir())[:3]
    together = tiny_explainer.explain(paths, method="random").maps
    alone = torch.cat([tiny_explainer.explain(p, method="random").maps for p in paths])
    assert torch.equal(together, alone)
    assert not torch.equal(together[0], together[1])
    assert together.shape == (3, 4, 4) and ((together >= 0) & (together < 1)).all()


def test_unreadable_and_unlabelled_images_are_skipped_and_counted(tiny_explainer, image_dir, tmp_path):
    (image_dir / "n00000100_LABEL_1.jpg").write_bytes(b"not a jpeg")
    (image_dir / "n00000101_no_such_class.png").write_bytes((image_dir / "n00000000_LABEL_0.png").read_bytes())
    (image_dir / "n00000102_LABEL_2.png").write_bytes(b"")
    summary = _run(tiny_explainer, image_dir, tmp_path / "out")
    assert summary["images"] == 8 and summary["complete"]
    assert len(summary["skipped"]["unreadable"]) == 2
    assert any("n00000100_LABEL_1.jpg" in m and "not an image" in m for m in summary["skipped"]["unreadable"])
    assert any("empty" in m for m in summary["skipped"]["unreadable"])
    assert len(summary["skipped"]["unknown_label"]) == 1
    assert "unknown class 'no_such_class'" in summary["skipped"]["unknown_label"][0]


def test_labels_from_table_and_class_subfolders(tiny_explainer, tmp_path, write_images):
    table = tmp_path / "classes.tsv"
    table.write_text("index\twnid\tname\n" + "".join(f"{i}\tn{900 + i:08d}\tthing {i}\n" for i in range(5)))
    for k, sub in enumerate(["n00000903", "LABEL_1", "4"]):
        write_images(tmp_path / "tree" / sub, 2, seed=k)
    found = discover(tmp_path / "tree", tiny_explainer.labels, table)
    assert [s.label for s in found.samples] == [4, 4, 1, 1, 3, 3]  # folders "4", "LABEL_1", "n00000903"
    resolver = LabelResolver(tiny_explainer.labels, table)
    assert resolver.resolve("n00000902_whatever") == 2
    assert resolver.resolve("thing_3") == 3
    with pytest.raises(AttngradError, match="ambiguous"):
        LabelResolver(["crane", "crane"]).resolve("n01234567_crane")


def test_labels_from_an_image_label_file(tiny_model_dir, tiny_explainer, tmp_path, write_images):
    images = write_images(tmp_path / "val", 4)
    flat = [p.rename(p.with_name(f"ILSVRC2012_val_{k:08d}.png")) for k, p in enumerate(images)]
    table = tmp_path / "classes.tsv"
    table.write_text("".join(f"{i}\tn{900 + i:08d}\tthing {i}\n" for i in range(5)))
    solution = tmp_path / "LOC_val_solution.csv"  # ImageNet's layout: wnid first, then boxes
    solution.write_text("ImageId,PredictionString\n" "ILSVRC2012_val_00000000,n00000904 1 2 3 4 n00000904 5 6 7 8\n"
                        "ILSVRC2012_val_00000001.png,2\n" "ILSVRC2012_val_00000002,thing 1\n")  # fmt: skip
    found = discover(tmp_path / "val", tiny_explainer.labels, table, image_labels=solution)
    assert [(Path(s.path).name, s.label) for s in found.samples] == [(flat[0].name, 4), (flat[1].name, 2), (flat[2].name, 1)]
    assert found.skipped == [(str(flat[3]), f"not named in {solution}")]
    with pytest.raises(AttngradError, match="no such image-label file"):
        discover(tmp_path / "val", tiny_explainer.labels, table, image_labels=tmp_path / "missing.csv")
    out = tmp_path / "out"
    args = ["evaluate", "perturbation", "--data", str(tmp_path / "val"), "--labels", str(table), "--image-labels",
            str(solution), "--model", str(tiny_model_dir), "--workers", "0", "--methods", "gae", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "not named in" in res.output and json.loads((out / "results.json").read_text())["images"] == 3
    assert json.loads((out / "run.json").read_text())["image_labels"] == "../LOC_val_solution.csv"  # relative to out


def test_empty_folder_and_bad_guide_give_clear_errors(tiny_model_dir, tiny_explainer, image_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AttngradError, match="no images found"):
        discover(tmp_path / "empty", tiny_explainer.labels)
    with pytest.raises(AttngradError, match="no such file"):
        _run(tiny_explainer, image_dir, tmp_path / "out", guide=str(tmp_path / "zebra.jpg"))
    runner = CliRunner()
    common = ["evaluate", "perturbation", "--model", str(tiny_model_dir), "--workers", "0"]
    res = runner.invoke(main, [*common, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o1")])
    assert res.exit_code == 2 and "no images found" in res.output
    res = runner.invoke(main, [*common, "--data", str(image_dir), "--out", str(tmp_path / "o2"), "--methods", "nope"])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output


def test_cli_runs_and_writes_results(tiny_model_dir, image_dir, tmp_path):
    out = tmp_path / "cli"
    args = ["evaluate", "perturbation", "--data", str(image_dir), "--model", str(tiny_model_dir), "--workers", "0",
            "--methods", "complete,random", "--limit", "4", "--batch-size", "2", "--out", str(out),
            "--insertion-deletion"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 4 and set(results["methods"]) == {"complete", "random"}
    assert results["settings"]["limit"] == 4 and "torch" in results["versions"]
    assert len(results["methods"]["complete"]["negative"]["curve"]) == 10
    assert len(results["methods"]["complete"]["insertion"]["curve"]) == 11 and results["settings"]["insertion_deletion"]


def test_guide_is_stitched_and_its_class_skipped(tiny_explainer, image_dir, tmp_path):
    from attngrad.experiments.guidance import crop_region, stitch

    guide = tmp_path / "n00000099_LABEL_2.png"
    guide.write_bytes((image_dir / "n00000003_LABEL_3.png").read_bytes())
    summary = _run(tiny_explainer, image_dir, tmp_path / "out", guide=str(guide), guide_region="original")
    assert summary["images"] == 6 and summary["skipped"]["guide_class"] == 2  # images 2 and 7 are class 2
    raw = load_shards(tmp_path / "out")
    assert 2 not in raw["label"].tolist()
    path, label = image_dir / raw["path"][0], int(raw["label"][0])
    stitched, region = stitch(path, guide)
    maps = crop_region(tiny_explainer.explain(stitched, target=label, method="gae").maps, region)
    assert maps.shape == (1, 4, 2)  # the original's half of the 4 x 4 grid
    assert raw["gae.positive.correct"][0].tolist() == _naive_hits(tiny_explainer, path, label, "gae", True, maps)
    assert raw["gae.negative.correct"][0].tolist() == _naive_hits(tiny_explainer, path, label, "gae", False, maps)


def test_cli_guide_by_class_name_takes_its_image_from_the_gallery(tiny_model_dir, image_dir, tmp_path):
    """``--guide CLASS --gallery G``: the run is the run with G's image of that class as the guide file."""
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    guide = gallery / "n00000099_LABEL_2.png"
    guide.write_bytes((image_dir / "n00000003_LABEL_3.png").read_bytes())
    common = ["evaluate", "perturbation", "--data", str(image_dir), "--model", str(tiny_model_dir), "--workers", "0",
              "--methods", "gae", "--guide-region", "original"]  # fmt: skip
    runs = {}
    for name, given in (("by_name", ["--guide", "label_2", "--gallery", str(gallery)]), ("by_file", ["--guide", str(guide)])):
        res = CliRunner().invoke(main, [*common, *given, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["by_name"]["skipped"]["guide_class"] == 2
    assert runs["by_name"]["methods"] == runs["by_file"]["methods"]
    res = CliRunner().invoke(main, [*common, "--guide", "label_4", "--gallery", str(gallery), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no image of class" in res.output and not (tmp_path / "x").exists()


def test_a_larger_limit_continues_a_run_whose_batches_stay_the_same(tiny_model_dir, tiny_explainer, image_dir, tmp_path):
    def run(out, limit, **kwargs):
        return _run(tiny_explainer, image_dir, out, limit=limit, methods=["gae"], **kwargs)

    full = run(tmp_path / "full", 8)
    run(tmp_path / "grown", 6)
    grown = run(tmp_path / "grown", 8, resume=True)  # 6 images = 2 whole batches: they stay valid
    assert grown["methods"] == full["methods"] and grown["images"] == 8
    assert json.loads((tmp_path / "grown" / "run.json").read_text())["limit"] == 8
    run(tmp_path / "odd", 4)  # 4 images end inside the second batch: it is redone with 3 images
    odd = run(tmp_path / "odd", 8, resume=True)
    assert odd["methods"] == full["methods"] and odd["images"] == 8
    assert len(load_shards(tmp_path / "odd")["index"]) == 8
    with pytest.raises(AttngradError, match="can only grow"):
        run(tmp_path / "odd", 5, resume=True)  # shrinking: the stored images are no prefix


def test_paired_comparison_from_raw_results(tiny_explainer, image_dir, tmp_path):
    from attngrad.evaluation import compare_methods

    summary = _run(tiny_explainer, image_dir, tmp_path / "out")
    found = compare_methods(tmp_path / "out", "gae", "random")
    for direction in ("positive", "negative"):
        entry = found[direction]
        assert entry["gae"] == pytest.approx(summary["methods"]["gae"][direction]["auc"])
        assert entry["random"] == pytest.approx(summary["methods"]["random"][direction]["auc"])
        assert entry["difference"] == pytest.approx(entry["gae"] - entry["random"])
        assert entry["images"] == 8 and entry["ci95"] >= 0


def _hits_vary(raw, methods):
    """The test model's top-1 does change with the removed pixels, and differently per direction: a
    swapped direction or a wrong fill would change the hits, so the comparisons above can fail."""
    hits = np.stack([raw[f"{m}.{d}.correct"] for m in methods for d in ("positive", "negative")])
    assert hits.any() and not hits.all()
    assert any(not np.array_equal(raw[f"{m}.positive.correct"], raw[f"{m}.negative.correct"]) for m in methods)


@pytest.mark.parametrize("explain", ["label", "predicted"])
def test_guided_paper_protocol_matches_a_per_image_loop_on_the_stitched_image(tiny_explainer, image_dir, tmp_path, explain):
    """The paper's protocol (default with a guide): each image stitched beside the guide, the map over
    the whole stitched input, its pixels ranked and removed, the stitched image's top-1 checked."""
    from attngrad.experiments.guidance import stitch

    guide = tmp_path / "n00000099_LABEL_2.png"
    guide.write_bytes((image_dir / "n00000003_LABEL_3.png").read_bytes())
    summary = _run(tiny_explainer, image_dir, tmp_path / "out", guide=str(guide), explain=explain, methods=["gae", "random"])
    assert summary["images"] == 6 and summary["skipped"]["guide_class"] == 2
    raw = load_shards(tmp_path / "out")
    pre = tiny_explainer.adapter.preprocessor
    preds0 = []
    for i in range(6):
        path, label = image_dir / raw["path"][i], int(raw["label"][i])
        stitched, _ = stitch(path, guide)  # the picture, independently of the runner's data set
        with torch.no_grad():
            logits = tiny_explainer.adapter.model(pixel_values=pre.normalize(pre.to_unit([stitched]))).logits
        preds0.append(int(logits.argmax()))
        target = label if explain == "label" else preds0[-1]  # predicted: on the stitched image
        assert int(raw["target"][i]) == target and int(raw["pred0"][i]) == preds0[-1]
        for method in ("gae", "random"):
            maps = tiny_explainer.explain(stitched, target=target, method=method).maps
            assert maps.shape == (1, 4, 4)  # the whole stitched input
            for direction, descending in (("positive", True), ("negative", False)):
                expected = _naive_hits(tiny_explainer, stitched, target, method, descending, maps)
                assert raw[f"{method}.{direction}.correct"][i].tolist() == expected, (i, method, direction)
    labels = raw["label"].tolist()
    assert summary["accuracy_at_0"] == pytest.approx(np.mean([p == t for p, t in zip(preds0, labels)]))
    _hits_vary(raw, ["gae", "random"])
    settings = json.loads((tmp_path / "out" / "results.json").read_text())["settings"]
    assert settings["guide_region"] == "whole" and "paper" in settings["guided_protocol"]
    assert "whole stitched input are ranked and removed" in settings["guided_protocol"]
    assert "the paper's protocol" in (tmp_path / "out" / "results.md").read_text()


def test_plain_hits_vary_with_the_removed_pixels(tiny_explainer, image_dir, tmp_path):
    _run(tiny_explainer, image_dir, tmp_path / "out")
    _hits_vary(load_shards(tmp_path / "out"), METHODS)


def test_resume_after_the_guide_changed_is_refused(tiny_explainer, image_dir, tmp_path):
    """The guide's content belongs to the run's identity: a new guide under the same path is not mixed in."""
    guide = tmp_path / "n00000099_LABEL_2.png"
    guide.write_bytes((image_dir / "n00000003_LABEL_3.png").read_bytes())
    out = tmp_path / "out"
    _run(tiny_explainer, image_dir, out, guide=str(guide), limit=4)
    guide.write_bytes((image_dir / "n00000004_LABEL_4.png").read_bytes())
    with pytest.raises(AttngradError, match="guide image .* changed"):
        _run(tiny_explainer, image_dir, out, guide=str(guide), limit=4, resume=True)


def test_method_options_are_part_of_the_run(tiny_explainer, image_dir, tmp_path):
    """--method-option values are stored in run.json; a resume with other values is another run and is refused."""
    options = {"ig": {"steps": 2, "layer": "hidden:0"}}
    out = tmp_path / "opt"
    assert _run(tiny_explainer, image_dir, out, methods=["ig", "random"], method_options=options, max_batches=1) is None
    assert json.loads((out / "run.json").read_text())["method_options"] == options
    with pytest.raises(AttngradError, match="settings differ \\(method_options\\)"):
        _run(tiny_explainer, image_dir, out, methods=["ig", "random"], resume=True,
             method_options={"ig": {"steps": 3, "layer": "hidden:0"}})
    with pytest.raises(AttngradError, match="settings differ \\(method_options\\)"):
        _run(tiny_explainer, image_dir, out, methods=["ig", "random"], resume=True)  # the defaults are not steps=2
    done = _run(tiny_explainer, image_dir, out, methods=["ig", "random"], method_options=options, resume=True)
    assert set(done["methods"]) == {"ig", "random"}
    with pytest.raises(AttngradError, match="steps"):
        _settings(["ig"], method_options={"ig": {"steps": 0}}).check()
    with pytest.raises(AttngradError, match="not among the methods"):
        _settings(["random"], method_options={"ig": {"steps": 2}}).check()
