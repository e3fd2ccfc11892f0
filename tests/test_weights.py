"""A cell's model from trained weights in a file (`model: {..., weights: model.pth}`), and
`train: {steps: 0}`: evaluated and compressed as loaded."""

import numpy as np
import pytest
import torch

from modelopt.run.cell import run_cell
from modelopt.run.plan import load_data
from modelopt.spec.suite import SuiteError, load
from modelopt.techniques.models import build

SUITE = """
name: trained
seeds: [0]
PLUGINS
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 12, n_classes: 3}
  model: {name: mlp, hidden: HIDDEN, weights: WEIGHTS}
  train: {steps: 0}
matrix:
  quantize: [none, int8_dynamic]
"""


def trained_file(tmp_path, name="model.pth", save=None, hidden=16):
    """A model trained by hand in plain PyTorch on the suite's data, saved."""
    cell = suite(tmp_path, "x.pth", hidden, check=False).cells[0]
    data = load_data(cell, 0)
    torch.manual_seed(1)
    net = build({"name": "mlp", "hidden": hidden}, data.input_shape, data.num_outputs)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(data.x_train), data.y_train).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(data.x_test).argmax(1) == data.y_test).double().mean())
    (save or (lambda n, p: torch.save(n.state_dict(), p)))(net, tmp_path / name)
    return accuracy, net


def suite(tmp_path, weights, hidden=16, check=True, plugins=""):
    path = tmp_path / "s.yaml"
    text = (SUITE.replace("HIDDEN", str(hidden)).replace("WEIGHTS", weights)
            .replace("PLUGINS", plugins))
    if not check:  # the suite's data, before any weights exist
        text = text.replace(", weights: x.pth", "")
    path.write_text(text)
    return load(str(path))


def test_a_post_training_cell_measures_the_users_own_model(tmp_path):
    """steps: 0 measures the model as loaded: its accuracy is the one measured by hand; the
    int8 cell quantizes that very model."""
    accuracy, _ = trained_file(tmp_path)
    s = suite(tmp_path, "model.pth")  # relative to the suite file's folder
    plain, int8 = (run_cell(c, 0) for c in s.cells)
    assert plain.status == int8.status == "ok", (plain.error, int8.error)
    assert plain.metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert plain.metrics["final_step"] == 0 and plain.metrics["accuracy"] > 0.6
    assert abs(int8.metrics["accuracy"] - accuracy) < 0.05 and int8.metrics["quantized"]
    rec_weights = s.cells[0].as_config()["model"]["weights"]
    assert rec_weights["path"] == str((tmp_path / "model.pth").resolve())
    assert len(rec_weights["sha256"]) == 64  # the record carries the file's hash


def test_the_files_content_is_part_of_the_cells_id(tmp_path):
    trained_file(tmp_path)
    first = suite(tmp_path, "model.pth").cells[0].cell_id
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.pth").write_bytes((tmp_path / "model.pth").read_bytes())
    assert suite(tmp_path, "elsewhere/model.pth").cells[0].cell_id == first  # same content
    trained_file(tmp_path, hidden=16, save=lambda n, p: torch.save(
        {k: v + 0.01 for k, v in n.state_dict().items()}, p))
    assert suite(tmp_path, "model.pth").cells[0].cell_id != first  # retrained: a new cell


def test_weights_that_do_not_fit_are_refused_before_anything_runs(tmp_path):
    trained_file(tmp_path)
    with pytest.raises(SuiteError, match=r"weights .*model.pth do not fit the model its spec "
                                         r"builds: .*of another shape \(file vs model\): "
                                         r"1.weight \(16, 12\) vs \(32, 12\)"):
        suite(tmp_path, "model.pth", hidden=32)
    with pytest.raises(SuiteError, match=r"model weights nope.pth: no such file"):
        suite(tmp_path, "nope.pth")
    # trained on other classes: said in those words, not as a shape alone
    path = tmp_path / "s.yaml"
    path.write_text(path.read_text().replace("nope.pth", "model.pth")
                    .replace("n_classes: 3", "n_classes: 4"))
    with pytest.raises(SuiteError, match=r"the data here has 4 classes \(outputs\), and the "
                                         r"weights' .*weight 3: they were trained on other"):
        load(str(path))


def test_weights_for_another_number_of_image_channels_name_the_channels_key():
    from modelopt.techniques.errors import TechniqueError
    from modelopt.techniques.weights import load_into

    def net(channels):
        return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3), torch.nn.Flatten(),
                                   torch.nn.LazyLinear(2))

    rgb = {k: v for k, v in net(3).state_dict().items() if not k.startswith("2.")}
    grey = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    with pytest.raises(TechniqueError, match=r"0.weight takes 3 input channel\(s\), and the "
                                             r"images here have 1: the model was trained on images "
                                             r"of 3 channel\(s\) \(an image folder.s `channels: 3`"):
        load_into(grey, rgb, "rgb.pth", outputs=2)


def test_checkpoints_wrappers_and_other_formats_load(tmp_path):
    """A checkpoint dict (its state_dict found, or under the key named), DDP's `module.`
    prefix, a Lightning module's (`model.` before every name), safetensors, and a source of
    weights registered by a plugin (.npz)."""
    from safetensors.torch import save_file

    accuracy, net = trained_file(tmp_path)
    state = net.state_dict()
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    torch.save({"epoch": 3, "weights_ema": state}, tmp_path / "ema.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}},  # Lightning's
               tmp_path / "lightning.ckpt")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "m.safetensors")
    np.savez(tmp_path / "m.npz", **{k: v.numpy() for k, v in state.items()})
    for weights, plugins in (("ckpt.pt", ""), ("{path: ema.pt, key: weights_ema}", ""),
                             ("ddp.pth", ""), ("lightning.ckpt", ""), ("m.safetensors", ""),
                             ("m.npz", "plugins: [tests.plugins]")):
        out = run_cell(suite(tmp_path, weights, plugins=plugins).cells[0], 0)
        assert out.metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9), weights


def test_a_pickled_model_is_refused_with_how_to_save_a_state_dict(tmp_path):
    trained_file(tmp_path, save=lambda n, p: torch.save(n, p))
    with pytest.raises(SuiteError, match=r"weights_only=True\) cannot read it.*Save the "
                                         r"state_dict alone: torch.save\(model.state_dict\(\)"):
        suite(tmp_path, "model.pth")


class _Runs:
    def __reduce__(self):  # what unpickling would call: never, here
        import os

        return (os.system, ("echo ran",))


@pytest.mark.parametrize("name, write, said", [
    ("evil.pt", lambda p: torch.save({"w": _Runs()}, p),
     r"unsupported GLOBAL posix.system \(code it would run, refused\)"),
    ("text.pt", lambda p: p.write_text("<html>404</html>\n"),
     r"a text file, not one torch.save wrote \(it starts: '<html>404</html>'\)"),
    ("lfs.pt", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\n"),
     r"a Git LFS pointer, not the weights: fetch the file itself"),
    ("torch.safetensors", lambda p: torch.save({"w": torch.zeros(2)}, p),
     r"not a safetensors file .*weights: \{name: torch, path: \.\.\.\}"),
])
def test_a_file_that_is_not_weights_says_what_it_is(tmp_path, name, write, said):
    write(tmp_path / name)
    with pytest.raises(SuiteError, match=said):
        suite(tmp_path, name)


def test_every_figure_is_the_shipped_models_own(tmp_path):
    """One-shot pruning and int8 of a loaded model: the validation score each cell reports
    (what tune chooses by) is its own shipped model's, and no best-validation checkpoint of
    another network is reported as its own."""
    trained_file(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.replace("HIDDEN", "16").replace("WEIGHTS", "model.pth")
                    .replace("PLUGINS", "").replace(
                        "quantize: [none, int8_dynamic]",
                        "prune: [none, {name: l1_unstructured, amount: 0.2},"
                        " {name: l1_unstructured, amount: 0.95}]"))
    dense, light, heavy = (run_cell(c, 0) for c in load(str(path)).cells)
    scores = [o.metrics["val_score"] for o in (dense, light, heavy)]
    assert scores[0] >= scores[1] > scores[2]  # 95 % of the weights gone shows
    for out in (dense, light, heavy):
        assert out.metrics.get("accuracy_best_val") is None  # absent from the record
        assert out.metrics.get("best_val_step") is None


def test_a_network_changed_after_training_inherits_no_best_validation_figures(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
name: after
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 12, n_classes: 3}
  model: {name: mlp, hidden: 16}
  train: {steps: 30, eval_every: 10}
matrix:
  prune: [none, {name: l1_unstructured, amount: 0.9},
          {name: l1_unstructured, amount: 0.9, finetune_steps: 10}]
  quantize: [none, int8_dynamic]
exclude:
  - {prune: {name: l1_unstructured, amount: 0.9}, quantize: int8_dynamic}
  - {prune: {name: l1_unstructured, amount: 0.9, finetune_steps: 10}, quantize: int8_dynamic}
""")
    cells = load(str(path)).cells
    assert len(cells) == 4
    dense, int8, pruned, tuned = (run_cell(c, 0) for c in cells)
    assert int8.metrics["quantized"] and tuned.metrics["finetune_seconds"] > 0
    assert dense.metrics["accuracy_best_val"] is not None
    assert tuned.metrics["accuracy_best_val"] is not None  # its fine-tuning's own checkpoint
    for out in (pruned, int8):  # the dense network's checkpoint is not theirs
        assert out.metrics.get("accuracy_best_val") is None
        assert out.metrics["val_score"] != dense.metrics["val_score"] or out is int8


def test_a_teacher_from_a_file_is_not_trained(tmp_path):
    """Distillation from the user's trained teacher: loaded, not trained (steps: 0); its
    accuracy is the file's."""
    accuracy, _ = trained_file(tmp_path, name="teacher.pth", hidden=16)
    path = tmp_path / "kd.yaml"
    path.write_text("""
name: kd
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 12, n_classes: 3}
  model: {name: mlp, hidden: 4}
  train: {steps: 20}
  distill: {name: kd, teacher: {model: {name: mlp, hidden: 16, weights: teacher.pth},
                                optimizer: adam, train: {steps: 0}}}
""")
    (cell,) = load(str(path)).cells
    assert cell.teacher().train.settings.steps == 0
    out = run_cell(cell, 0)
    assert out.status == "ok", out.error
    assert out.metrics["teacher_accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_fine_tuning_is_a_phase_of_its_own(tmp_path):
    """Pruning's fine-tune may name its own optimizer and rate (a loaded model that is not
    trained, then fine-tuned at another rate); the training's stays the cell's."""
    path = tmp_path / "ft.yaml"
    path.write_text("""
name: ft
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 12, n_classes: 3}
  model: {name: mlp, hidden: 16}
  train: {steps: 20, eval_every: 10, finetune_optimizer: {name: sgd, lr: 0.05}}
  prune: {name: l1_unstructured, amount: 0.5, finetune_steps: 10}
""")
    (cell,) = load(str(path)).cells
    out = run_cell(cell, 0)
    lrs = {c["phase"]: c["lr"] for c in out.curves}
    assert lrs == {"train": 0.001, "finetune": 0.05}


def test_tune_picks_a_compression_setting_on_the_compressed_models_own_scores(tmp_path):
    """Before, a one-shot pruned cell reported the dense network's validation score, so
    tune over prune.amount saw equal scores and took the first setting."""
    import pandas as pd

    from modelopt.results import report, tables
    from modelopt.run import outcome

    trained_file(tmp_path)
    path = tmp_path / "t.yaml"
    path.write_text(SUITE.replace("HIDDEN", "16").replace("WEIGHTS", "model.pth")
                    .replace("PLUGINS", "").replace("quantize: [none, int8_dynamic]",
                                                    "model.hidden: [16]")
                    .replace("  train: {steps: 0}", "  train: {steps: 0}\n  prune: l1_unstructured")
                    + "tune:\n  prune.amount: [0.95, 0.2]\n")
    s = load(str(path))
    assert len(s.cells) == 2
    rows = []
    for cell in s.cells:
        payload = outcome.from_output(run_cell(cell, 0), cell.cell_id, 0, None)
        rows.append(outcome.record(s, cell, 0, "", 1.0, payload, None).model_dump())
    df = pd.DataFrame([{**r, **r["metrics"]} for r in rows])
    best = tables.tuned(report.aggregate(df))
    assert list(best["chosen"]) == ["prune.amount=0.2"]


def test_a_weights_file_changed_after_the_suite_loaded_is_not_measured_as_the_old(tmp_path):
    from modelopt.techniques.errors import TechniqueError

    trained_file(tmp_path)
    cell = suite(tmp_path, "model.pth").cells[0]
    trained_file(tmp_path, save=lambda n, p: torch.save(
        {k: v * 2 for k, v in n.state_dict().items()}, p))
    with pytest.raises(TechniqueError, match="changed since the suite loaded"):
        run_cell(cell, 0)


def test_the_suites_own_import_path_factories_are_trusted_to_rebuild_its_records(tmp_path):
    """A run added to with --force (after retraining the weights) times the earlier cells
    too: their records name the suite's own factory by import path, which is the user's
    code, not a module a results file smuggles in."""
    from modelopt.run import timing

    path = tmp_path / "p.yaml"
    path.write_text(SUITE.replace("PLUGINS", "").replace(
        "{name: mlp, hidden: HIDDEN, weights: WEIGHTS}", '"tests.plugins:tiny_net"'))
    user = timing.UserCode.of_suite(load(str(path)))
    assert user.factories == {"tests.plugins:tiny_net"}  # that factory, not its whole module
    assert "tests.plugins" in user.plugins["modules"]  # imported where a model is rebuilt


def test_tuning_loaded_models_on_a_split_they_may_have_seen_is_warned(tmp_path):
    trained_file(tmp_path)
    plain = suite(tmp_path, "model.pth")
    assert not plain.warnings
    path = tmp_path / "s.yaml"
    path.write_text(path.read_text().replace("  train: {steps: 0}", "  train: {steps: 0}\n"
                                             "  prune: l1_unstructured")
                    + "tune:\n  prune.amount: [0.2, 0.5]\n")
    assert any("may have seen those samples" in w for w in load(str(path)).warnings)


def test_a_cell_that_trains_nothing_and_loads_nothing_is_warned(tmp_path):
    """`steps: 0` without `weights:` measures a randomly initialised model: said at load, and
    the misspelt key's hint names `weights`."""
    bare = suite(tmp_path, "x.pth", check=False)
    said = [w for w in bare.warnings if "train 0 steps and load no weights" in w]
    assert len(said) == 1 and "random weights" in said[0]
    assert "2 cell(s) (quantize=none; quantize=int8_dynamic)" in said[0]  # by its axes
    trained_file(tmp_path)
    assert not suite(tmp_path, "model.pth").warnings
    path = tmp_path / "s.yaml"
    # weights, and no steps named: the default 1,000 fine-tune them, said at load
    path.write_text(path.read_text().replace("  train: {steps: 0}\n", ""))
    said = load(str(path)).warnings
    assert len(said) == 1 and "train them 1000 more steps" in said[0] and "steps: 0" in said[0]
    path.write_text(path.read_text().replace("weights:", "weight:"))
    with pytest.raises(SuiteError, match=r"no parameter 'weight' \(did you mean 'weights'\?\)"):
        load(str(path))


def test_a_distill_teacher_loading_weights_without_steps_is_warned(tmp_path):
    """A teacher is a cell of its own: given weights and no steps, it is fine-tuned 1,000
    steps before it teaches, as a cell is; said at load, naming the student."""
    trained_file(tmp_path)
    path = tmp_path / "kd.yaml"
    teacher = "{model: {name: mlp, hidden: 16, weights: model.pth}TRAIN}"
    text = SUITE.replace("PLUGINS", "").replace(", weights: WEIGHTS", "").replace(
        "HIDDEN", "8").replace("  quantize: [none, int8_dynamic]",
                               f"  distill: [{{name: kd, teacher: {teacher}}}]")
    path.write_text(text.replace("TRAIN", ""))
    said = [w for w in load(str(path)).warnings if "distill teacher" in w]
    assert len(said) == 1 and "its distill teacher: load trained weights and train " \
        "them 1000 more steps" in said[0] and "distill=kd" in said[0]
    path.write_text(text.replace("TRAIN", ", train: {steps: 0}"))
    assert not [w for w in load(str(path)).warnings if "distill teacher" in w]


def test_compare_pairs_a_cell_with_retrained_weights_and_re_times_it(tmp_path):
    """A retrained model.pth is another cell (its sha256 is in the id): the gate said "no
    cell in common" for the question it exists for, what the new weights changed."""
    from modelopt.results import compare, gate_page
    from modelopt.run import runner, timing

    trained_file(tmp_path)
    assert not runner.run(suite(tmp_path, "model.pth"), tmp_path / "a", jobs=1,
                          timing_stage=False).failed
    trained_file(tmp_path, save=lambda n, p: torch.save(
        {k: v + 0.05 for k, v in n.state_dict().items()}, p))
    assert not runner.run(suite(tmp_path, "model.pth"), tmp_path / "b", jobs=1,
                          timing_stage=False).failed

    def timer(items, plan, pairs, progress=None):
        return timing.time_saved(items, timing.UserCode({"modules": [], "path": []}), plan,
                                 progress=progress, pairs=pairs)

    cmp = compare.compare(tmp_path / "a", tmp_path / "b", timer=timer, processes=3)
    assert cmp.common == 2 and not cmp.only_baseline and not cmp.only_current
    assert "accuracy" in {r.metric for r in cmp.rows}
    assert {r.metric for r in cmp.rows if r.note == "re-timed side by side"} >= {
        "latency_ms_p50"}, cmp.note
    assert "trained weights model.pth@" in cmp.data and " → model.pth@" in cmp.data
    assert "not gated" not in gate_page.summary(cmp)
    # without re-timing the summary line itself says latency went ungated (a green line
    # read alone said nothing of it)
    unseen = compare.compare(tmp_path / "a", tmp_path / "b", timer=None)
    assert "latency not gated" in gate_page.summary(unseen)


def test_two_models_of_other_weights_each_are_not_paired_by_guess():
    """Review 16: with a.pth and b.pth both retrained, the current a.pth cell was gated
    against the baseline's b.pth cell. Pairs are made only where one cell on each side
    differs so."""
    from modelopt.results.sides import Side, pair_retrained

    def side(*files):
        s = Side("trained")
        for f in files:
            cid = f.replace(".", "")
            s.status[cid] = {0: ("ok", "")}
            s.configs[cid] = {"model": {"name": "mlp", "weights": {"path": f, "sha256": cid}}}
        return s

    base, cur = side("a.pth", "b.pth"), side("a2.pth", "b2.pth")
    pair_retrained(base, cur)
    assert set(cur.status) == {"a2pth", "b2pth"} and not cur.own
    base, cur = side("a.pth"), side("a2.pth")
    pair_retrained(base, cur)
    assert set(cur.status) == {"apth"} and cur.own == {"apth": "a2pth"}
