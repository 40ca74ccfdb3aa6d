"""Security: loopback-only listening (HTTP and gRPC), token authorization (and where TorchServe
does not apply it: the metrics API), no model registration, no secret in any artefact, archive
members that stay inside, model files that really live in the folder, and pickle weights only
when the user opted in.

Covered elsewhere: calls without the token refused on the inference API and by the CLI
(test_serve_cli.py), registration off without token auth (test_server.py), pickle weights
refused at build time (test_build_model_folder.py).
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import posixpath
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import torch
from click.testing import CliRunner
from support.fake_context import FakeContext
from support.s3_stores_and_proxies import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, s3_environ
from support.shared_servers import Secured

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import ARCHIVE_FORMATS, ArchiveFormat, BuildSettings
from scibert_pack.cli import cli
from scibert_pack.config.properties import parse as parse_properties
from scibert_pack.errors import ModelFolderError
from scibert_pack.handlers.model import ModelLoadError
from scibert_pack.handlers.service import ClassifierService
from scibert_pack.handlers.settings import HandlerSettings

pytest_plugins = ["support.s3_fixtures"]
SCIBERT_PACK = str(Path(sys.executable).parent / "scibert-pack")


# -- listening sockets ----------------------------------------------------------------------


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the ")" that ends the command name: state, ppid, pgrp, ...
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order.
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(ordered)


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by one of `pids`."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                host, port = local.split(":")
                found.append((str(_address(host)), int(port, 16)))
    return sorted(found)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.server
def test_local_profile_listens_on_loopback_only(secured: Secured) -> None:
    built = parse_properties((secured.store / "config" / "config.properties").read_text())
    for key in ("inference_address", "management_address", "metrics_address"):
        assert urlsplit(built[key]).hostname == "127.0.0.1", (key, built[key])
    for key in ("grpc_inference_address", "grpc_management_address"):
        assert built[key] == "127.0.0.1", (key, built[key])
    assert secured.server.pid is not None
    sockets = listening(_group_pids(secured.server.pid))
    ports = secured.server.settings.ports()
    # Inference, management, metrics, gRPC inference and gRPC management: all of them, and
    # nothing else, on 127.0.0.1.
    assert {port for _, port in sockets} == set(ports.values()), (sockets, ports)
    assert all(_is_loopback(address) for address, _ in sockets), sockets


@pytest.mark.server
@pytest.mark.parametrize("api", ["gRPC inference", "gRPC management"])
def test_grpc_ports_listen_on_loopback(secured: Secured, api: str) -> None:
    assert secured.server.pid is not None
    port = secured.server.settings.ports()[api]
    addresses = [a for a, p in listening(_group_pids(secured.server.pid)) if p == port]
    assert addresses, f"nothing listens on the {api} port {port}"
    assert all(_is_loopback(a) for a in addresses), addresses
    # Reachable on loopback: a TCP connection is accepted there.
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass


# -- token authorization and registration ----------------------------------------------------


@pytest.mark.server
def test_management_needs_the_token_and_registration_stays_off(secured: Secured) -> None:
    server = secured.server
    models = f"{server.management_url}/models"
    refused = requests.get(models, timeout=30)
    assert refused.status_code == 400  # TorchServe 0.12's answer to a missing token
    assert refused.json()["type"] == "InvalidKeyException"
    token = {"Authorization": f"Bearer {server.token('management')}"}
    assert requests.get(models, headers=token, timeout=30).status_code == 200
    # Even with the management token, no model can be registered from a URL.
    register = requests.post(f"{models}?url=https://example.com/x.mar", headers=token, timeout=30)
    assert register.status_code in (403, 405), register.text
    assert "sec" in requests.get(models, headers=token, timeout=30).text
    assert len(requests.get(models, headers=token, timeout=30).json()["models"]) == 1


@pytest.mark.server
def test_metrics_port_answers_without_the_token(secured: Secured) -> None:
    """TorchServe 0.12 applies token authorization to the inference and management APIs only:
    /metrics on the metrics port answers anyone who can reach it (here: loopback only). What it
    shows is per-model counters and timings, never the texts or answers."""
    server = secured.server
    text = "cells divide under the microscope"
    url = f"{server.inference_url}/v2/models/sec/infer"
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    token = {"Authorization": f"Bearer {server.token('inference')}"}
    assert requests.post(url, json=body, headers=token, timeout=60).status_code == 200
    assert requests.post(url, json=body, timeout=60).status_code == 400  # no token: refused

    metrics = requests.get(f"{server.metrics_url}/metrics", timeout=30)  # no token
    assert metrics.status_code == 200
    assert 'ts_inference_requests_total{model_name="sec"' in metrics.text
    assert text not in metrics.text
    wrong = requests.get(
        f"{server.metrics_url}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=30
    )
    assert wrong.status_code == 200  # a wrong token is not even looked at


# -- no secret in any artefact ---------------------------------------------------------------


def _archive_members(path: Path) -> Iterator[tuple[str, bytes]]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                yield f"{path}!{name}", zf.read(name)
    elif path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as tf:
            for member in tf.getmembers():
                extracted = tf.extractfile(member)
                if extracted is not None:
                    yield f"{path}!{member.name}", extracted.read()


def artefacts(*roots: Path, skip: set[str]) -> Iterator[tuple[str, bytes]]:
    """Every file under `roots` (and every member of archives), except files named in `skip`."""
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name in skip:
                continue
            data = path.read_bytes()
            yield str(path), data
            yield from _archive_members(path)


@pytest.mark.server
@pytest.mark.s3
def test_no_credential_or_token_reaches_any_artefact_log_or_output(
    secured: Secured, moto_server: S3Server, tmp_path: Path
) -> None:
    server = secured.server
    keys = json.loads(server.key_file.read_text())
    tokens = sorted({str(v["key"]) for v in keys.values() if isinstance(v, dict) and "key" in v})
    assert len(tokens) >= 2  # inference and management keys at least
    secrets = [ACCESS_KEY_ID, SECRET_ACCESS_KEY, *tokens]
    outputs = list(secured.outputs)

    # Use every part once: predict and explain (with the key file), upload, manifest.
    client = ["--url", server.inference_url, "--model", "sec", "--key-file", str(server.key_file)]
    for command in ("predict", "explain"):
        ran = CliRunner().invoke(cli, [command, "cells divide", *client])
        assert ran.exit_code == 0, ran.output
        outputs += [ran.stdout, ran.stderr]
    moto_server.client().create_bucket(Bucket="secure")
    env = s3_environ(moto_server.endpoint, tmp_path)
    uploaded = subprocess.run(
        [SCIBERT_PACK, "-vv", "upload", str(secured.store), "s3://secure/sec", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    outputs += [uploaded.stdout, uploaded.stderr]
    uri = json.loads(uploaded.stdout)["storage_uri"]
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    made = CliRunner().invoke(
        cli,
        ["manifest", "--from-store", str(secured.store), "--storage-uri", uri, "--grafana",
         "-o", str(manifests / "isvc.yaml"), "--dockerfile", str(manifests / "Dockerfile")],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    outputs += [made.stdout, made.stderr]
    stored = moto_server.client()
    for key in moto_server.keys("secure"):
        (tmp_path / "bucket" / key).parent.mkdir(parents=True, exist_ok=True)
        body = stored.get_object(Bucket="secure", Key=key)["Body"].read()
        (tmp_path / "bucket" / key).write_bytes(body)

    scanned = list(
        artefacts(
            secured.store,  # archive members, config.properties, build-report.json
            server.run_dir,  # TorchServe's logs, the runtime config, the worker's output
            manifests,
            tmp_path / "bucket",
            skip={"key_file.json"},
        )
    )
    scanned += [(f"cli output {i}", text.encode()) for i, text in enumerate(outputs)]
    names = {name.rsplit("/", 1)[-1] for name, _ in scanned}
    assert {"sec.mar", "config.properties", "build-report.json", "isvc.yaml", "Dockerfile"} <= names
    assert any(name.endswith("model_log.log") for name, _ in scanned)
    leaks = [
        (name, secret[:6] + "...")
        for name, data in scanned
        for secret in secrets
        if secret.encode() in data
    ]
    assert leaks == []


# -- archive members -------------------------------------------------------------------------


def member_names(archive: Path, archive_format: ArchiveFormat) -> list[str]:
    if archive_format == "no-archive":
        names = []
        for path in archive.rglob("*"):
            assert not path.is_symlink(), path
            assert path.resolve().is_relative_to(archive.resolve()), path
            names.append(path.relative_to(archive).as_posix())
        return names
    if archive_format == "tgz":
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
        assert all(m.isfile() or m.isdir() for m in members), [m.name for m in members]
        return [m.name for m in members]
    with zipfile.ZipFile(archive) as zf:
        return zf.namelist()


@pytest.mark.parametrize("archive_format", ARCHIVE_FORMATS)
def test_archive_member_names_stay_inside_the_archive(
    tiny_bert: Path, tmp_path: Path, archive_format: ArchiveFormat
) -> None:
    result = build(tiny_bert, BuildSettings(name="m", archive_format=archive_format), tmp_path)
    names = member_names(result.archive, archive_format)
    assert any(n.endswith("MAR-INF/MANIFEST.json") for n in names), names
    for name in names:
        plain = name.rstrip("/")
        assert plain and "\\" not in plain and ":" not in plain, name
        assert not plain.startswith("/"), name
        assert posixpath.normpath(plain) == plain.removeprefix("./"), name
        assert ".." not in plain.split("/"), name


# -- symlinks in the model folder ------------------------------------------------------------


def _link_outside(folder: Path) -> str:
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to("/etc/passwd")
    return "/etc/passwd"


def _link_inside(folder: Path) -> str:
    (folder / "config.json").rename(folder / "config.real.json")
    (folder / "config.json").symlink_to("config.real.json")
    return ""


def _hugging_face_cache(folder: Path) -> str:
    """The hub cache layout: snapshots/REV/FILE -> ../../blobs/HASH."""
    blobs = folder / "blobs"
    snapshot = folder / "snapshots" / "abc123"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(p for p in folder.iterdir() if p.is_file())):
        file.rename(blobs / f"blob{i}")
        (snapshot / file.name).symlink_to(f"../../blobs/blob{i}")
    return ""


@pytest.mark.parametrize(
    ("arrange", "refused"),
    [(_link_outside, True), (_link_inside, False), (_hugging_face_cache, False)],
    ids=["link-outside-refused", "link-inside-packed", "hf-cache-snapshot-packed"],
)
def test_model_files_must_live_in_the_model_folder(
    model_copy: Callable[..., Path], tmp_path: Path, arrange: Callable[[Path], str], refused: bool
) -> None:
    folder = model_copy()
    target = arrange(folder)
    if arrange is _hugging_face_cache:
        folder = folder / "snapshots" / "abc123"
    out = tmp_path / "out"
    if refused:
        with pytest.raises(ModelFolderError) as caught:
            build(folder, BuildSettings(name="m"), out)
        assert str(caught.value) == (
            f"tokenizer.json in model folder {folder} is a link to {target}, outside the "
            "folder; scibert-pack packs only files that live in the model folder; replace "
            f"{folder}/tokenizer.json with a copy of the file you mean to ship (cp "
            f"--remove-destination {target} {folder}/tokenizer.json) and rerun"
        )
        assert not out.exists()
        return
    result = build(folder, BuildSettings(name="m"), out)
    with zipfile.ZipFile(result.archive) as zf:
        assert json.loads(zf.read("config.json"))["architectures"] == [
            "BertForSequenceClassification"
        ]
        assert zf.getinfo("model.safetensors").file_size > 0


# -- pickle weights at load time -------------------------------------------------------------


def test_worker_loads_pickle_weights_only_when_the_archive_allows(
    model_copy: Callable[..., Path],
) -> None:
    from transformers import AutoModelForSequenceClassification

    folder = model_copy()
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    with pytest.raises(ModelLoadError) as caught:
        ClassifierService.from_context(FakeContext(folder))
    assert str(caught.value) == (
        f"model folder {folder} holds only pickle weights (pytorch_model.bin) and this archive "
        "was not built to load them (unpickling can run code); rebuild from safetensors "
        "weights, or with `scibert-pack build --allow-pickle` if you trust them"
    )
    allowed = ClassifierService.from_context(
        FakeContext(folder, handler_settings={"allow_pickle": True})
    )
    assert allowed.info.labels == ("biology", "chemistry", "physics")


def test_build_records_the_pickle_opt_in_for_the_worker(
    model_copy: Callable[..., Path], tmp_path: Path
) -> None:
    import yaml

    folder = model_copy()
    shutil.copy(folder / "model.safetensors", folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    for allow in (False, True):
        settings = BuildSettings(name="m", handler=HandlerSettings(allow_pickle=allow))
        if not allow:
            with pytest.raises(ModelFolderError, match="holds only pickle weights"):
                build(folder, settings, tmp_path / "refused")
            continue
        result = build(folder, settings, tmp_path / "allowed")
        with zipfile.ZipFile(result.archive) as zf:
            handler = yaml.safe_load(io.BytesIO(zf.read("model-config.yaml")))["handler"]
        assert handler["allow_pickle"] is True
        assert result.report["settings"]["handler"]["allow_pickle"] is True
