"""A suite's YAML, read safely (PyYAML's SafeLoader: no tag builds an object) and strictly:
a key given twice in one mapping is refused, where PyYAML keeps the last and a matrix axis
written twice silently vanished."""

from __future__ import annotations

from collections.abc import Hashable

import yaml
from yaml.constructor import ConstructorError

MERGE = "tag:yaml.org,2002:merge"  # `<<: *anchor`: its keys may be given again, on purpose


class _Strict(yaml.SafeLoader):
    pass


def _mapping(loader: _Strict, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE:
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise ConstructorError(None, None, f"the key '{key}' is given twice in one mapping "
                                   "(YAML would keep the last and drop the first)",
                                   key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(text: str | bytes):
    """The document; yaml.YAMLError where it is not valid YAML (or repeats a key)."""
    return yaml.load(text, Loader=_Strict)  # noqa: S506 - a SafeLoader subclass
