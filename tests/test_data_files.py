"""The files a dataset reads are fingerprinted: a results directory never resumes over data
that changed, and `compare` says when the two runs read different data."""

import json

import pytest

from modelopt.results import compare, gate_page
from modelopt.run import runner
from modelopt.spec import data_files
from modelopt.spec.suite import parse

SUITE = """
name: table
seeds: [0]
defaults:
  dataset: {{name: csv, path: '{csv}', target: label}}
  model: linear
  train: {{steps: 5, batch_size: 16, eval_every: 5}}
"""


def write_table(path, flip: bool = False):
    rows = [(i % 7 / 7, (i * 3) % 5 / 5, "a" if (i % 2 == 0) != flip else "b") for i in range(80)]
    path.write_text("x1,x2,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))


def test_a_changed_file_changes_the_suites_content_not_its_cells(tmp_path):
    csv = tmp_path / "t.csv"
    write_table(csv)
    before = parse(SUITE.format(csv=csv))
    (cid,) = [c.cell_id for c in before.cells]
    assert before.inputs[cid]["data_files"]["path"].startswith("sha256:")
    write_table(csv, flip=True)  # the same size, other labels
    after = parse(SUITE.format(csv=csv))
    assert [c.cell_id for c in after.cells] == [cid]  # still the cell compare pairs
    assert after.content_hash != before.content_hash
    assert after.inputs[cid]["data_files"] != before.inputs[cid]["data_files"]
    # built-in data reads no file of the user's: no fingerprint, the hash as before
    builtin = parse("name: b\ndefaults: {dataset: mnist1d, model: mlp}\n")
    assert not any("data_files" in i for i in builtin.inputs.values())


def test_a_folder_is_fingerprinted_by_its_files_names_and_sizes(tmp_path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "1.png").write_bytes(b"x" * 10)
    first = data_files.fingerprint(str(root))
    data_files._folder.cache_clear()
    (root / "dog").mkdir()
    (root / "cat" / "1.png").rename(root / "dog" / "1.png")  # moved to another class
    assert data_files.fingerprint(str(root)) != first
    assert data_files.fingerprint(str(tmp_path / "none")) is None
    # class folders that are links are read through, as ImageFolder reads them; a hidden
    # file is no image; a link back up the tree is walked once
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "dog").symlink_to(root / "dog", target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)
    before = data_files.fingerprint(str(linked))
    assert before.startswith("files:1:")
    data_files._folder.cache_clear()
    (root / "dog" / ".DS_Store").write_bytes(b"x")
    assert data_files.fingerprint(str(linked)) == before
    data_files._folder.cache_clear()
    (root / "dog" / "2.png").write_bytes(b"y")
    assert data_files.fingerprint(str(linked)) != before


def test_resume_refuses_changed_data_and_compare_says_the_data_differ(tmp_path):
    csv = tmp_path / "t.csv"
    write_table(csv)
    assert not runner.run(parse(SUITE.format(csv=csv)), tmp_path / "a", jobs=1).failed
    rec = json.loads((tmp_path / "a" / "results.jsonl").read_text().splitlines()[0])
    assert rec["extra"]["data_files"]["path"].startswith("sha256:")
    write_table(csv, flip=True)
    changed = parse(SUITE.format(csv=csv))
    with pytest.raises(runner.ResumeError, match=r"data path \(t.csv\) sha256:\w+ → sha256:\w+ "
                       r"for 1 cell\(s\)") as refused:
        runner.run(changed, tmp_path / "a", jobs=1)
    assert "cell(s) new" not in str(refused.value) and "seeds" not in str(refused.value)
    # a suite.json of an older modelopt kept no identity: the records say what they read
    meta = json.loads((tmp_path / "a" / "suite.json").read_text())
    for key in ("cells", "seeds", "inputs"):
        del meta[key]
    (tmp_path / "a" / "suite.json").write_text(json.dumps(meta))
    with pytest.raises(runner.ResumeError, match=r"data path \(t.csv\) sha256:"):
        runner.run(changed, tmp_path / "a", jobs=1)
    assert not runner.run(changed, tmp_path / "b", jobs=1).failed
    cmp = compare.compare(tmp_path / "a", tmp_path / "b", timer=None)
    assert "read different inputs for 1 cell(s)" in cmp.data and "path (t.csv): sha256:" in cmp.data
    assert cmp.data in gate_page.markdown(cmp)
    itself = compare.compare(tmp_path / "b", tmp_path / "b", timer=None).data
    assert "different inputs" not in itself and "compared with itself" in itself
    # forced, the cell of the old data runs again here: it is not kept as done
    forced = runner.run(changed, tmp_path / "a", jobs=1, force=True)
    assert not forced.failed
    latest = json.loads((tmp_path / "a" / "results.jsonl").read_text().splitlines()[-1])
    assert latest["extra"]["data_files"] == changed.inputs[changed.cells[0].cell_id]["data_files"]


def test_an_edited_plugin_is_another_content_and_another_training(tmp_path, monkeypatch):
    """A plugin optimizer rewritten since: resume said "already ok, 0 to run", and train
    once reused a network the old code trained."""
    from modelopt.run import dense
    from modelopt.spec import plugins
    from modelopt.spec.suite import load

    (tmp_path / "my_code_v.py").write_text("VERSION = 1\n")
    (tmp_path / "s.yaml").write_text("name: p\nplugins: [my_code_v]\n"
                                     "defaults: {dataset: mnist1d, model: mlp}\n")
    before = load(str(tmp_path / "s.yaml"))
    trained_before = dense.key(before.cells[0], 0)
    (tmp_path / "my_code_v.py").write_text("VERSION = 2\n")
    plugins._code.cache_clear()  # a new process reads it anew; this one cached it
    after = load(str(tmp_path / "s.yaml"))
    assert [c.cell_id for c in after.cells] == [c.cell_id for c in before.cells]
    assert after.content_hash != before.content_hash
    assert dense.key(after.cells[0], 0) != trained_before
    # a suite without code of the user's: no code hash in its content
    monkeypatch.delenv("MODELOPT_PLUGINS", raising=False)
    assert plugins.code_of({"model": {"name": "mlp"}}) is None


def test_changed_inputs_are_said_alike_by_resume_and_compare():
    """One wording for a changed file or plugin, whoever says it; unchanged inputs say
    nothing."""
    dataset = {"name": "csv", "path": "/data/t.csv"}
    assert data_files.changes({"path": "sha256:a"}, {"path": "sha256:a"}, "c1", "c1",
                              dataset) == []
    said = data_files.changes({"path": "sha256:a"}, {"path": "sha256:b"}, "c1", "c2",
                              dataset, lead="data ")
    assert said == ["data path (t.csv) sha256:a → sha256:b", "your plugins' code c1 → c2"]
    # a file only one run read, and code only one run had
    assert data_files.changes({}, {"root": "files:1:x"}, None, "c2", {}, sep=":") == [
        "root (?): – → files:1:x", "your plugins' code – → c2"]
