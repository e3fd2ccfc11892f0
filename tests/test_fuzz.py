"""Property-based: whatever document a suite file holds, loading it either gives a Suite or
our SuiteError (exit 2), never another exception, and never runs anything."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelopt.spec.keys import NAMES as CELL_KEYS
from modelopt.spec.suite import SuiteError, parse

NAMES = ["mnist1d", "digits", "synthetic", "cnn", "mlp", "linear", "gru", "cnn2d", "adam", "sgd",
         "cosine", "l1", "l1_unstructured", "kd", "dynamic_int8", "cpu", "cuda", "standardize",
         "shift", "nope", ""]
KEYS = list(CELL_KEYS) + ["name", "lr", "hidden", "steps", "amount", "model.hidden", "x"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
    st.sampled_from(NAMES), st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)),
                                            inner, max_size=4)),
    max_leaves=25,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("fz"), scalars),
        "seeds": st.one_of(st.lists(st.integers(-5, 5), max_size=3), values),
        "defaults": st.one_of(st.dictionaries(st.sampled_from(KEYS), values, max_size=4), values),
        "matrix": st.one_of(st.dictionaries(st.sampled_from(KEYS), st.lists(values, max_size=3),
                                            max_size=3), values),
        "include": st.one_of(st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=3),
                                      max_size=2), values),
        "exclude": values,
        "timeout_s": scalars,
        "bogus": values,
    },
)


def must_parse_or_reject(text):
    try:
        parse(text, "fuzz.yaml")
    except SuiteError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_structured_documents(doc):
    must_parse_or_reject(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_arbitrary_bytes(blob):
    must_parse_or_reject(blob)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    must_parse_or_reject(text)


def test_alias_bomb_is_rejected_quickly():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]\n"
    bomb += "name: boom\nmatrix:\n  model: *i\n"
    try:
        parse(bomb, "bomb.yaml")
    except SuiteError as e:
        assert "too large" in str(e)
    else:
        raise AssertionError("a billion-laughs suite was accepted")


def test_deep_nesting_and_non_utf8():
    for text in ["[" * 5000 + "]" * 5000, b"name: \xff\xfe\x00bad", "a: " + "{b: " * 200 + "1" + "}" * 200]:
        must_parse_or_reject(text)


# ---------------------------------------------------------------- results directories
# whatever a results directory's files hold, reading them gives data or ResultsError (exit 2
# with the file and line), never another exception

RECORD = {"suite": "s", "cell_id": "abc", "seed": 0, "status": "ok",
          "cell": {"model": {"name": "mlp"}}, "metrics": {"accuracy": 0.5}}
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12)


def must_read_or_reject(read, path):
    from modelopt.results.files import ResultsError

    try:
        read(path)
    except ResultsError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(sorted(RECORD) + ["extra", "env", "group"]), json_values,
                       max_size=5), st.binary(max_size=60))
def test_odd_records_and_bytes(tmp_path_factory, fields, tail):
    import json

    from modelopt.results import store

    d = tmp_path_factory.mktemp("r")
    line = json.dumps({**RECORD, **fields}).encode()
    (d / "results.jsonl").write_bytes(line + b"\n" + tail + b"\n")
    must_read_or_reject(store.read, d)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(json_values, st.fixed_dictionaries(
    {"suite": json_values, "processes": json_values, "rows": st.lists(json_values, max_size=2)})))
def test_odd_timing_and_suite_files(tmp_path_factory, doc):
    import json

    from modelopt.results import latency, store

    d = tmp_path_factory.mktemp("t")
    text = json.dumps(doc)
    (d / "timing.json").write_text(text)
    (d / "suite.json").write_text(text)
    must_read_or_reject(latency.read, d)
    must_read_or_reject(store.read_meta, d)
