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
