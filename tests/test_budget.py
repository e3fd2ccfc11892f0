"""match_budget: rows that train as long as the compressed cells, without compressing."""

import pytest

from modelopt.spec.suite import SuiteError, parse

BASE = """name: mb
seeds: [0]
match_budget: true
defaults: {dataset: {name: mnist1d, num_samples: 500}, optimizer: {name: adam, lr: 0.01},
           model: mlp, train: TRAIN}
include:
  - {prune: none}
  - {prune: {name: l1_unstructured, amount: 0.5, finetune_steps: 20}}
  - {prune: {name: l1_structured, amount: 0.5, finetune_steps: 20}}
  - {model: {name: mlp, hidden: 20}, distill: {name: kd, teacher: {model: mlp, optimizer: adam,
                                                                   train: {steps: 30}}}}
"""


def _cells(train: str):
    return parse(BASE.replace("TRAIN", train)).cells


def test_matched_rows_train_as_long_without_the_compression():
    cells = _cells("{steps: 50}")
    added = cells[4:]
    # both pruned cells fine-tune 20 steps: one dense row of 70 steps, not two
    assert len(cells) == 6
    dense = added[0]
    assert dense.compress.prune is None and dense.train.distill is None
    assert dense.train.settings.steps == 70 and dense.train.optimizer.params["lr"] == 0.01
    alone = added[1]  # the student, same steps, no teacher
    assert alone.train.distill is None and alone.model.params["hidden"] == 20
    assert alone.train.settings.steps == 50
    assert parse(BASE.replace("TRAIN", "{steps: 50}").replace("match_budget: true",
                                                              "")).cells == cells[:4]


def test_a_loaded_model_is_fine_tuned_with_the_fine_tunes_own_optimizer():
    cells = _cells("{steps: 0, finetune_optimizer: {name: sgd, lr: 0.05}}")
    dense = next(c for c in cells[4:] if c.model.params["hidden"] == 100)
    assert dense.train.settings.steps == 20
    assert (dense.train.optimizer.name, dense.train.optimizer.params["lr"]) == ("sgd", 0.05)
    assert dense.train.settings.finetune_optimizer is None


@pytest.mark.parametrize("train, says", [
    ("{epochs: 2}", "trains for epochs; give train.steps"),
    ("{steps: 50, finetune_optimizer: sgd}", "one dense row cannot train both ways"),
])
def test_a_budget_that_cannot_be_matched_is_refused(train, says):
    with pytest.raises(SuiteError, match=says) as err:
        _cells(train)
    assert err.value.where == "match_budget"
