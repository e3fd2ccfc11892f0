"""Registries: typed facts per entry, constraints in the signature."""

import pytest

from modelopt.spec.registries import DATASETS, MODELS
from modelopt.spec.registry import Positive, Registry, RegistryError, describe


def test_a_misspelt_fact_is_an_error_at_registration():
    """`inputs=` for `input=` once disabled the dataset/model check without a word."""
    with pytest.raises(TypeError, match=r"dataset 'mine':.*unexpected keyword argument 'inputs'"):
        DATASETS.register("mine", inputs="image")
    with pytest.raises(TypeError, match=r"model 'mine':.*'accept'"):
        MODELS.register("mine", accept=("image",))
    assert "mine" not in DATASETS and "mine" not in MODELS


def test_signature_constraints_are_checked_and_described():
    reg = Registry("thing")

    @reg.register("t")
    def t(*, rate: Positive = 1.0):
        """A thing."""

    assert reg.check("t", {"rate": "2"}) == {"rate": 2.0}  # coerced like a YAML value
    with pytest.raises(RegistryError, match=r"thing 't' parameter 'rate': Input should be "
                                            r"greater than 0 \(got -1"):
        reg.check("t", {"rate": -1})
    assert describe(reg.get("t").params[0].annotation) == "float > 0"


def test_modelopt_list_shows_parameters_and_defaults_without_code_reprs():
    from modelopt.spec.listing import listing

    text = listing()
    assert "imagefolder(" in text and "l1_structured(" in text
    assert "(steps or epochs, not both; neither: 1000 steps)" in text
    assert "<function" not in text and " at 0x" not in text
    # the sources a model's weights may come from, and the tasks datasets pose
    assert "safetensors() [suffixes=.safetensors]" in text
    assert "regression() [headline=r2]" in text


def test_modelopt_list_into_a_reader_that_leaves_early_ends_quietly():
    """`modelopt list | head`: the pipe closes under it; exit 0, no traceback. (`true`
    reads nothing and is gone before modelopt writes: the closed pipe, every time.)"""
    import subprocess
    import sys

    r = subprocess.run(["bash", "-c", f"'{sys.executable}' -m modelopt list | true; "
                        "echo ${PIPESTATUS[0]}"], capture_output=True, text=True)
    assert r.stdout.strip() == "0" and "Traceback" not in r.stderr, r.stderr


def test_modelopt_list_lists_your_plugin_and_says_when_it_registered_nothing(tmp_path):
    """A plugin author checks that their loss registered: `modelopt list --plugins MODULE`
    (from the working directory, as compare's --plugins); entries say where they came from."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shutil.copy(Path(__file__).parents[1] / "examples/extending/focal_loss.py",
                tmp_path / "my_losses_for_list.py")
    (tmp_path / "forgot_register.py").write_text("def loss(model):\n    return None\n")
    (tmp_path / "my_pkg_for_list").mkdir()  # a package registers through its submodules
    (tmp_path / "my_pkg_for_list" / "__init__.py").write_text("from . import losses\n")
    shutil.copy(Path(__file__).parents[1] / "examples/extending/focal_loss.py",
                tmp_path / "my_pkg_for_list" / "losses.py")
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('half-written')\n")

    def ls(*modules):
        return subprocess.run([sys.executable, "-m", "modelopt", "list",
                               *[a for m in modules for a in ("--plugins", m)]],
                              cwd=tmp_path, capture_output=True, text=True)

    r = ls("my_losses_for_list", "forgot_register")
    assert r.returncode == 0, r.stderr
    assert "focal(gamma: float >= 0 = 2.0)" in r.stdout and "[from my_losses_for_list]" in r.stdout
    assert "plugin module 'forgot_register' registered nothing" in r.stdout
    assert "my_losses_for_list' registered nothing" not in r.stdout
    assert "[from modelopt" not in r.stdout  # modelopt's own entries say nothing
    r = ls("no_such_plugin_module")
    assert r.returncode == 2 and "cannot import plugin module 'no_such_plugin_module'" in r.stderr
    r = ls("my_pkg_for_list")
    assert r.returncode == 0 and "registered nothing" not in r.stdout, r.stdout[-500:]
    assert "[from my_pkg_for_list.losses]" in r.stdout
    r = ls("raises_on_import")  # a traceback before
    assert r.returncode == 2 and "importing 'raises_on_import' raised RuntimeError: half-written" \
        in r.stderr and "Traceback" not in r.stderr


def test_a_factory_that_does_not_take_what_modelopt_passes_is_refused_when_registered():
    """A plugin model without `(input_shape, num_outputs, /)` registered fine and failed
    every cell at run time (or the suite was asked for `input_shape`)."""
    from modelopt.spec.registries import MODELS, SCHEDULES

    with pytest.raises(TypeError, match=r"model 'no_shape': no_shape\(hidden: int = 16\) must "
                                        r"take \(input_shape, num_outputs\) first, positional-only"):
        @MODELS.register("no_shape")
        def no_shape(hidden: int = 16):
            pass

    with pytest.raises(TypeError, match=r"schedule 'not_positional': f\(optimizer, total_steps, "
                                        r"gamma=0.9\) .* def f\(optimizer, total_steps, /, ...\)"):
        SCHEDULES.register("not_positional")(lambda optimizer, total_steps, gamma=0.9: None)
    reg = Registry("thing")
    with pytest.raises(TypeError, match=r"takes x positional-only without a default, which "
                                        r"modelopt does not pass \(it passes none\)"):
        reg.register("needs_one")(lambda x, /: x)
    with pytest.raises(TypeError, match=r"takes extra positional-only .* \(it passes "
                                        r"\(input_shape, num_outputs\)\)"):
        MODELS.register("one_too_many")(lambda input_shape, num_outputs, extra, /: None)
    assert "no_shape" not in MODELS and "not_positional" not in SCHEDULES

    @MODELS.register("takes_shape_for_test")
    def ok(input_shape, num_outputs, /, hidden: int = 16):
        pass

    assert [p.name for p in MODELS.get("takes_shape_for_test").params] == ["hidden"]


def test_an_unknown_name_says_how_a_plugins_name_becomes_known():
    """A plugin's metric named without its module loaded read `unknown metric 'ece'; choose
    one of: ` (nothing after it)."""
    with pytest.raises(RegistryError, match=r"unknown widget 'ece'; modelopt has no widget of "
                                            r"its own \(a plugin's widget is known once the "
                                            r"suite's `plugins:` or MODELOPT_PLUGINS loads"):
        Registry("widget").get("ece")
