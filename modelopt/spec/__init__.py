"""What a suite may say: the registries, the suite schema and its validation, plugins."""
