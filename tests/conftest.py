import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so cell processes can import tests.plugins

# Test-only techniques (a model that crashes its process, one that hangs) reach the cell
# processes the way user plugins do.
os.environ["MODELOPT_PLUGINS"] = "tests.plugins"
os.environ.setdefault("PYTHONPATH", str(ROOT))
if str(ROOT) not in os.environ["PYTHONPATH"].split(os.pathsep):
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ["PYTHONPATH"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one generated-data cache for the session, never the user's
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("MODELOPT_CACHE", str(cache))


TINY = """
name: tiny
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 8, n_classes: 3}
  model: {name: mlp, hidden: 16}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 30, batch_size: 32, eval_every: 10}
matrix:
  model: [linear, {name: mlp, hidden: 16}]
"""


@pytest.fixture
def tiny_suite_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p
