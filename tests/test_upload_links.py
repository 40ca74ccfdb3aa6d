"""`upload` sends only the store's own regular files (issue 11, item 4): a link (out of the
store or inside it, to a file or a folder) or a special file is refused, named, before anything
reaches S3, a mounted PVC or a local folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.s3_stores_and_proxies import S3Server

from scibert_pack.cli import cli

pytest_plugins = ["support.s3_fixtures"]

_FIX = (
    "replace each link with a copy of the file it points to (cp --remove-destination TARGET "
    "LINK), remove special files, or rebuild the store with `scibert-pack build`"
)


def mar_links_outside(store: Path, outside: Path) -> str:
    mar = store / "model-store" / "scibert.mar"
    mar.rename(outside / "scibert.mar")
    mar.symlink_to(outside / "scibert.mar")
    return f"model-store/scibert.mar (a link to {outside / 'scibert.mar'})"


def config_links_to_a_secret(store: Path, outside: Path) -> str:
    (outside / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (store / "config" / "log4j2.xml").symlink_to(outside / "id_rsa")
    return f"config/log4j2.xml (a link to {outside / 'id_rsa'})"


def folder_links_outside(store: Path, outside: Path) -> str:
    (outside / "etc").mkdir()
    (outside / "etc" / "shadow").write_text("root:x")
    (store / "config" / "extra").symlink_to(outside / "etc")
    return f"config/extra (a link to {outside / 'etc'})"


def link_inside_the_store(store: Path, outside: Path) -> str:
    (store / "model-store" / "copy.mar").symlink_to("scibert.mar")
    return "model-store/copy.mar (a link to scibert.mar)"


def fifo(store: Path, outside: Path) -> str:
    os.mkfifo(store / "config" / "pipe")
    return "config/pipe (a FIFO)"


ARRANGE: dict[str, Callable[[Path, Path], str]] = {
    "mar-link-outside": mar_links_outside,
    "config-link-to-a-secret": config_links_to_a_secret,
    "folder-link-outside": folder_links_outside,
    "link-inside-the-store": link_inside_the_store,
    "fifo": fifo,
}
BACKENDS = ["s3", "pvc-mount", "local-path"]


@pytest.mark.s3
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(ARRANGE))
def test_links_and_special_files_are_refused_before_anything_is_sent(
    s3_env: S3Server,
    bucket: str,
    make_store: Callable[..., Path],
    tmp_path: Path,
    case: str,
    backend: str,
) -> None:
    store = make_store()
    outside = tmp_path / "outside"
    outside.mkdir()
    named = ARRANGE[case](store, outside)
    destination = tmp_path / "destination"
    args = {
        "s3": [f"s3://{bucket}/scibert"],
        "pvc-mount": ["pvc://model-claim/scibert", "--pvc-mount", str(destination)],
        "local-path": [str(destination / "versions")],
    }[backend]
    destination.mkdir()

    result = CliRunner().invoke(cli, ["upload", str(store), *args])

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"Error: model store {store} holds links or special files, which upload does not "
        f"send: {named}; nothing was uploaded; {_FIX}\n"
    )
    assert s3_env.keys(bucket) == []
    assert list(destination.iterdir()) == []


def test_every_offending_file_is_named(make_store: Callable[..., Path], tmp_path: Path) -> None:
    store = make_store()
    outside = tmp_path / "outside"
    outside.mkdir()
    named = [arrange(store, outside) for arrange in (config_links_to_a_secret, fifo)]
    result = CliRunner().invoke(cli, ["upload", str(store), str(tmp_path / "dest")])
    assert result.exit_code == 2
    assert f"send: {', '.join(sorted(named))}; nothing was uploaded" in result.stderr
    assert not (tmp_path / "dest").exists()
