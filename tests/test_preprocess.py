import pytest
import torch

from modelopt.techniques import preprocess
from modelopt.techniques.data import DATASETS, load, split_validation


def synth():
    return split_validation(DATASETS.build("synthetic", 0, n_samples=400, n_features=6), 0.2, 0)


def test_standardize_uses_training_statistics_only():
    d = synth()
    shifted = d.__class__(**{**d.__dict__, "x_test": d.x_test + 100.0})  # test far away
    s = preprocess.apply([{"name": "standardize"}], shifted, 0)
    assert torch.allclose(s.x_train.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(s.x_train.std(0), torch.ones(6), atol=1e-4)
    assert float(s.x_test.mean()) > 10  # test statistics never leaked into the fit


def test_standardize_with_the_statistics_a_model_was_trained_with():
    """A model trained elsewhere with its own scaler sees its inputs as it did: the mean and
    std it was trained with (a StandardScaler's mean_ and scale_), not this split's."""
    d = synth()
    mean, std = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0] * 6
    s = preprocess.apply([{"name": "standardize", "mean": mean, "std": std}], d, 0)
    assert torch.allclose(s.x_test, (d.x_test - torch.tensor(mean)) / 2.0)
    with pytest.raises(ValueError, match="one value per feature: 6, got 2 and 2"):
        preprocess.apply([{"name": "standardize", "mean": [0.0, 1.0], "std": [1.0, 1.0]}], d, 0)
    with pytest.raises(ValueError, match="give mean and std together"):
        preprocess.apply([{"name": "standardize", "mean": mean}], d, 0)
    one = preprocess.apply([{"name": "standardize", "per_feature": False, "mean": [1.0],
                             "std": [2.0]}], d, 0)
    assert torch.allclose(one.x_test, (d.x_test - 1.0) / 2.0)


def test_statistics_that_do_not_fit_the_dataset_are_refused_when_the_suite_loads():
    """Found at run time, every cell failed; the suite names the step instead, exit 2."""
    from modelopt.spec.suite import SuiteError, parse

    suite = ("name: s\ndefaults: {model: mlp, dataset: {name: synthetic, n_features: 6}, "
             "preprocess: [{name: standardize, STATS}]}\n")
    with pytest.raises(SuiteError, match="one value per feature: 6, got 2 and 2"):
        parse(suite.replace("STATS", "mean: [0.0, 1.0], std: [1.0, 1.0]"))
    with pytest.raises(SuiteError, match="give mean and std together"):
        parse(suite.replace("STATS", "std: [1.0, 1.0]"))
    assert parse(suite.replace("STATS", "mean: [0.0] , std: [2.0], per_feature: false")).cells
    assert parse(suite.replace("STATS", f"mean: {[0.0] * 6}, std: {[1.0] * 6}")).cells


def test_minmax_range_holds_on_train():
    s = preprocess.apply([{"name": "minmax", "low": -1.0, "high": 1.0}], synth(), 0)
    assert float(s.x_train.min()) == pytest.approx(-1) and float(s.x_train.max()) == pytest.approx(1)


def test_subsample_fraction_and_balance():
    d = load({"name": "mnist1d"}, 0, 0.0)
    s = preprocess.apply([{"name": "subsample", "fraction": 0.1, "balanced": True}], d, 0)
    assert len(s.x_train) == pytest.approx(400, abs=10)
    before = torch.bincount(d.y_train, minlength=10).float() / len(d.y_train)
    after = torch.bincount(s.y_train, minlength=10).float() / len(s.y_train)
    assert torch.allclose(before, after, atol=0.01)


def test_dedupe_drops_exact_duplicates():
    d = synth()
    doubled = d.__class__(**{**d.__dict__, "x_train": torch.cat([d.x_train, d.x_train[:7]]),
                             "y_train": torch.cat([d.y_train, d.y_train[:7]])})
    s = preprocess.apply([{"name": "dedupe"}], doubled, 0)
    assert s.info["duplicates_dropped"] == 7 and len(s.x_train) == len(d.x_train)


@pytest.mark.parametrize("name,shape,params,zero", [
    ("shift", (16, 1, 40), {"max_steps": 5}, {"max_steps": 0}),
    ("noise", (16, 1, 40), {"sigma": 0.1}, {"sigma": 0.0}),
    ("scale", (16, 1, 40), {"low": 0.5, "high": 1.5}, {"low": 1.0, "high": 1.0}),
    ("rotation", (16, 1, 8, 8), {"degrees": 30.0}, {"degrees": 0.0}),
    ("resized_crop", (16, 1, 8, 8), {"scale": (0.5, 0.9)}, {"scale": (1.0, 1.0), "ratio": (1.0, 1.0)}),
    ("hflip", (16, 1, 8, 8), {"p": 0.5}, {"p": 0.0}),
])
def test_augmentations(name, shape, params, zero):
    x = torch.rand(shape)
    fn = preprocess.AUGMENT.build(name, **params)
    out = fn(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.equal(out, x)
    again = fn(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the same seed gives the same batch
    ident = preprocess.AUGMENT.build(name, **zero)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(ident, x, atol=1e-6)  # identity at zero strength


def test_sparse_inputs_train_like_dense_and_save_memory():
    from modelopt.run.cell import run_cell
    from modelopt.spec.suite import SuiteError, parse

    text = """
name: sp
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 400, n_features: 40, n_classes: 3}
  model: {name: mlp, hidden: 16}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 60, batch_size: 32, eval_every: 30}
matrix:
  preprocess: [{name: sparse, threshold: 2.0}, [{name: minmax, low: -1.0, high: 1.0}]]
"""
    cells = parse(text).cells
    sparse_out = run_cell(cells[0], 0)
    m = sparse_out.metrics
    # COO costs 4 + 8 x dims bytes per nonzero: it saves memory below ~20 % density
    assert m["input_density"] < 0.15 and m["input_mb_sparse"] < m["input_mb_dense"]
    # the same zeroed inputs stored dense give the same accuracy: storage is all that changed
    import torch

    from modelopt.run.backends import cpu
    from modelopt.run.plan import load_data, train_here
    from modelopt.techniques.data import replace

    data = load_data(cells[0], 0)
    dense = replace(data, x_train=data.x_train.to_dense())
    out_dense = train_here(cpu(), cells[0], 0, dense).outcome
    out_sparse = train_here(cpu(), cells[0], 0, data).outcome
    def without_time(curves):
        return [{k: v for k, v in c.items() if k != "seconds"} for c in curves]

    assert without_time(out_dense.curves) == without_time(out_sparse.curves)
    assert torch.equal(data.x_train.to_dense(), dense.x_train)
    with pytest.raises(SuiteError, match="must come last"):
        parse(text.replace("[{name: minmax, low: -1.0, high: 1.0}]",
                           "[{name: sparse}, {name: minmax}]"))
