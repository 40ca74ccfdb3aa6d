"""What a manifest needs from a built model store: scibert_pack.layout's StoreFacts.

The manifest needs the build report (tool versions, ports as built) as well as config.properties.
"""

from __future__ import annotations

from pathlib import Path

from scibert_pack.archiver.settings import quoted
from scibert_pack.config.properties import Ports
from scibert_pack.errors import StoreError
from scibert_pack.kserve.names import PACKAGE_VERSION
from scibert_pack.layout import CONFIG_FILE, REPORT_FILE, StoreFacts, served_archive
from scibert_pack.layout import read_store as read_store_facts

# The report's versions that a Dockerfile's FROM and pip lines and the manifest carry.
_PINNED = ("torch", "torchserve", "transformers", "captum", "python", "onnxruntime")
_FROM_STORE_FIX = "point {option} at the OUT folder of `scibert-pack build`, or rebuild it"
DEFAULT_PORTS = Ports().as_dict()


def read_store_for_manifest(out: Path, *, option: str = "--from-store") -> StoreFacts:
    """The facts of the model store at `out`; StoreError when a file is missing or unreadable,
    naming `option` (the one that gave `out`) in its fix."""
    fix = _FROM_STORE_FIX.format(option=option)
    facts = read_store_facts(out, fix=fix, report_required=True)
    if not facts.model_name:
        raise StoreError(
            f"model store {out} names no model (no model_name in {REPORT_FILE}, "
            f"no model_snapshot in {CONFIG_FILE})",
            fix="rebuild the store with `scibert-pack build`",
        )
    served_archive(facts, fix=fix)
    for dist in _PINNED:
        version = facts.versions.get(dist)
        if version is not None and not PACKAGE_VERSION.fullmatch(version):
            raise StoreError(
                f"model store {out}: {REPORT_FILE} gives {dist} version {quoted(version)}, "
                "which is not a package version (a Dockerfile would carry it as it is)",
                fix="rebuild the store with `scibert-pack build` instead of editing its report",
            )
    return facts
