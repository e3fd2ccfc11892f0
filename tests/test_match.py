"""One rule for naming cells by some of their settings: `baseline:` (read against records)
and `expect_failure:` (against resolved cells) agree, trained weights included."""

import pytest
import torch

from modelopt.spec.match import within
from modelopt.spec.suite import SuiteError, load

FILE = {"name": "torch", "path": "/x/suites/weights/m.pth", "sha256": "ab", "key": None}


@pytest.mark.parametrize("want, have, hit", [
    ("cnn", {"name": "cnn", "channels": 8}, True),
    ({"name": "cnn", "channels": 16}, {"name": "cnn", "channels": 8}, False),
    ("none", None, True),
    ("none", {"name": "int8_dynamic"}, False),
    ({"name": "mlp", "weights": None}, {"name": "mlp"}, True),  # a key the cell lacks is off
    ([{"name": "l2"}], [{"name": "l2", "weight": 1e-4}], True),
    ("1e-2", 0.01, True),
    ("weights/m.pth", FILE, True),
    ("../suites/weights/m.pth", FILE, True),
    ("other/m.pth", FILE, False),
    ("torch", FILE, True),  # the source's name
    ({"path": "weights/m.pth", "key": None}, FILE, True),
    ({"path": "weights/m.pth", "key": "model_state"}, FILE, False),
])
def test_a_setting_holds_what_is_written_about_it(want, have, hit):
    assert within(want, have) is hit


def test_a_baseline_names_trained_weights_by_the_path_the_suite_wrote():
    """Records keep the resolved path and hash; a suite's `baseline:` names the file as its
    cells do, relative to the suite's folder."""
    recorded = {"name": "cnn2d", "weights": FILE}
    assert within({"name": "cnn2d", "weights": "weights/m.pth"}, recorded)
    assert not within({"name": "cnn2d", "weights": "other/m.pth"}, recorded)


def test_expect_failure_and_baseline_name_a_model_by_its_weights_file(tmp_path):
    """A file named in a pattern is checked and matched by its content: a link or another
    path to the same bytes names the same cells, a file with other weights none."""
    (tmp_path / "w").mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10))  # as `linear` builds it
    torch.save(net.state_dict(), tmp_path / "w" / "m.pth")
    (tmp_path / "latest.pth").symlink_to(tmp_path / "w" / "m.pth")
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10)).state_dict(),
               tmp_path / "w" / "other.pth")
    text = """name: s
seeds: [0]
defaults: {dataset: mnist1d, optimizer: adam, train: {steps: 0}}
matrix:
  model: [{name: linear, weights: w/m.pth}, linear]
baseline: {model: {name: linear, weights: BASE}}
expect_failure:
  - cell: {model: {name: linear, weights: WRITTEN}}
    reason: the loaded one
"""
    path = tmp_path / "s.yaml"
    for written in ("w/m.pth", "latest.pth", "w/../w/m.pth"):
        path.write_text(text.replace("WRITTEN", written).replace("BASE", written))
        suite = load(path)
        [(cid, _)] = suite.expected_failures
        cell = next(c for c in suite.cells if c.cell_id == cid).as_config()
        assert cell["model"]["weights"]["path"] == str(tmp_path / "w" / "m.pth")
        # the baseline the results directory keeps names the file by its content
        assert suite.baseline["model"]["weights"]["sha256"] == cell["model"]["weights"]["sha256"]
    for where, written in (("expect_failure[0].cell", "w/other.pth"),
                           ("baseline", "w/other.pth")):
        path.write_text(text.replace("WRITTEN", written if where != "baseline" else "w/m.pth")
                        .replace("BASE", written if where == "baseline" else "w/m.pth"))
        with pytest.raises(SuiteError, match=r"matches no cell .*other.pth@") as err:
            load(path)
        assert err.value.where == where


def test_a_baseline_is_checked_when_the_suite_loads():
    """A misspelt baseline would run the whole suite and then compare nothing."""
    from modelopt.spec.suite import parse

    base = """name: s
seeds: [0]
defaults: {dataset: mnist1d, model: cnn, optimizer: adam}
matrix:
  quantize: [none, int8_dynamic]
"""
    with pytest.raises(SuiteError, match="did you mean 'bf16'") as err:
        parse(base + "baseline: {quantize: bf61}\n")
    assert err.value.where == "baseline.quantize"
    with pytest.raises(SuiteError, match="matches no cell of the suite: no cell has "
                                         "quantize=int8_static") as err:
        parse(base + "baseline: {quantize: int8_static}\n")
    assert err.value.where == "baseline"
    assert parse(base + "baseline: {quantize: none, deploy: eager}\n").baseline == {
        "quantize": None, "deploy": None}
    # a parameter alone names every model that has it; one that none has is refused
    assert parse(base + "baseline: {model: {channels: 25}}\n").baseline == {
        "model": {"channels": 25}}
    with pytest.raises(SuiteError, match="no cell has model=") as err:
        parse(base + "baseline: {model: {chanels: 25}}\n")
