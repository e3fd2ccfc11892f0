"""Cells that learned less than a trivial predictor of the same test split: said on the
page where it happens, not left to a column of the wide table. Pure: DataFrames in,
strings out."""

from __future__ import annotations

import pandas as pd


def floor_notes(agg: pd.DataFrame) -> list[str]:
    """Every floor some cell is under, as a bullet of the page's preamble."""
    return [note for note in (counts_note(agg), mean_note(agg)) if note]


def counts_note(agg: pd.DataFrame) -> str:
    """A language model whose test perplexity is above the Kneser-Ney trigram's, fitted on
    the same training tokens and scored on the same test tokens, learned less than counts
    of three tokens."""
    kn, ppl = "baseline_kneser_ney_perplexity", "perplexity"
    if kn not in agg.columns or ppl not in agg.columns:
        return ""
    both = agg[agg[kn].notna() & agg[ppl].notna()]
    worse = both[both[ppl] > both[kn]]
    if worse.empty:
        return ""
    return (f"- **{len(worse)} of {len(both)} cell(s) predict worse than counts**: their test "
            f"perplexity is above the Kneser-Ney trigram's on the same test tokens "
            f"({both[kn].min():.4g}"
            + (f" to {both[kn].max():.4g}" if both[kn].max() != both[kn].min() else "")
            + "): train longer, or give the model more room, before reading its other figures")


def mean_note(agg: pd.DataFrame) -> str:
    """A regression model whose mean R² is below 0 predicts the test targets worse than
    their own mean would (R² = 1 - residual / total sum of squares, about that mean)."""
    if "r2" not in agg.columns:
        return ""
    scored = agg[agg["r2"].notna()]
    worse = scored[scored["r2"] < 0]
    if worse.empty:
        return ""
    return (f"- **{len(worse)} of {len(scored)} cell(s) predict worse than the mean**: their "
            f"test R² is below 0 (lowest {worse['r2'].min():.3g}), so a constant, the test "
            "targets' mean, is closer: check the targets' scale and the learning rate, or "
            "train longer, before reading their other figures")
