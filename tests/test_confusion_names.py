"""The confusion plot names an image folder's classes (index order), numbers otherwise."""

import pandas as pd

from modelopt.results import diagnostics


def test_the_confusion_plot_names_the_classes():
    df = pd.DataFrame([{"cell_id": "a", "status": "ok", "confusion": [[3, 1], [0, 4]],
                        "class_names": ["cat", "dog"]}])
    agg = pd.DataFrame([{"cell_id": "a", "n": 1, "accuracy": 0.9, "axis:model": "m"}])
    fig = diagnostics.confusion(df, agg)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cat", "dog"]
    fig = diagnostics.confusion(df.drop(columns=["class_names"]), agg)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1"]
