"""YAML text for `kubectl apply -f -`: documents separated by ---, keys in the order given.

PyYAML's safe dumper quotes every string that would read back as another type ("true",
"8082", "1.0"), which is what annotations and labels need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Safe dumper: multi-line strings (dashboard JSON) as literal blocks, no &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_documents(documents: Sequence[dict[str, Any]], *, header: str = "") -> str:
    body = yaml.dump_all(
        documents,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
        allow_unicode=True,
        width=100,
    )
    return header + body
