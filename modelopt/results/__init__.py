"""Reading results: the record, the store, the metric table, reports, plots, compare, export.

Everything here reads files only: it never imports modelopt.techniques or modelopt.run, so
results of a user's own models and datasets report without their code."""
