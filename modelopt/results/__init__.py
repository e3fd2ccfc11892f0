"""Results: the files a run writes (records, the timing stage's figures, the metrics it
declared) and what is made from them: reports, plots, compare, export.

Nothing here builds, trains or times a model: it never imports modelopt.techniques or
modelopt.run, so results of a user's own models and datasets report without their code."""
