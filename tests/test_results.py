import json

import pytest

from modelopt.results import store as results
from modelopt.results.record import Record


def rec(cell, seed, acc, status="ok"):
    return Record(suite="s", cell_id=cell, seed=seed, status=status,
                  cell={"model": {"name": "mlp"}}, metrics={"accuracy": acc})


def test_append_read_and_latest_wins(tmp_path):
    results.append(tmp_path, rec("a", 0, 0.5, "failed"))
    results.append(tmp_path, rec("a", 0, 0.9))
    results.append(tmp_path, rec("b", 0, float("nan")))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    got = results.read(tmp_path)
    assert [(r.cell_id, r.status) for r in got] == [("a", "ok"), ("b", "ok")]
    assert got[1].metrics["accuracy"] is None  # NaN is written as null: valid JSON
    df = results.load(tmp_path)
    assert list(df["accuracy"].fillna(-1)) == [0.9, -1]


def test_truncated_last_line_is_ignored_with_warning(tmp_path):
    results.append(tmp_path, rec("a", 0, 0.5))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"suite": "s", "cell_id": "b", "se')
    with pytest.warns(UserWarning, match="truncated"):
        assert len(results.read(tmp_path)) == 1
    results.repair(tmp_path)
    results.append(tmp_path, rec("c", 0, 0.5))
    assert [r.cell_id for r in results.read(tmp_path)] == ["a", "c"]


def test_malformed_line_names_file_and_line(tmp_path):
    results.append(tmp_path, rec("a", 0, 0.5))
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write("not json\n")
    results.append(tmp_path, rec("b", 0, 0.5))
    with pytest.raises(results.ResultsError, match=r"results.jsonl:2"):
        results.read(tmp_path)
