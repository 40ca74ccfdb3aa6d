"""`scibert-pack rehearse`: the written runtime run as a pod (namespaces, /mnt/models, the
container's user, the kubelet's probes, the ingress's requests) against a real TorchServe.

Each broken case breaks one thing on purpose and pins the finding that names it. One tiny
store per profile is built once for the module; each rehearsal starts TorchServe once.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.s3_stores_and_proxies import S3Server

from scibert_pack.archiver.build import build
from scibert_pack.archiver.settings import BuildSettings
from scibert_pack.cli import cli
from scibert_pack.errors import PortInUseError
from scibert_pack.kserve.manifest import build_manifest
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.pod_calls import ready_workers
from scibert_pack.kserve.pod_checks import (
    DOCKERFILE_NAME,
    check_before_start,
    dockerfile_pins,
    environment_versions,
    version_differences,
)
from scibert_pack.kserve.pod_sandbox import (
    POD_IP,
    PodProcessSpec,
    can_isolate,
    pod_script,
    stand_in_masks,
)
from scibert_pack.kserve.pod_spec import plan_from_documents, read_plan
from scibert_pack.kserve.rehearsal import RehearsalReport, RehearsalSettings, rehearse
from scibert_pack.kserve.store_info import read_store_for_manifest
from scibert_pack.kserve.yaml_text import dump_documents

pytest_plugins = ["support.s3_fixtures"]

ISOLATES, WHY_NOT = can_isolate()
needs_pod = pytest.mark.skipif(not ISOLATES, reason=f"a full rehearsal needs {WHY_NOT}")
Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def stores(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model built once per profile; one worker keeps each start short."""
    root = tmp_path_factory.mktemp("rehearse-stores")
    for profile in ("kserve", "local"):
        settings = BuildSettings(name="tiny", profile=profile, min_workers=1, max_workers=1)
        build(tiny_bert, settings, root / profile)
    return {profile: root / profile for profile in ("kserve", "local")}


def write_manifest(folder: Path, store: Path, edit: Edit | None = None, **options: Any) -> Path:
    """What `scibert-pack manifest --from-store STORE -o folder/manifest.yaml` writes, with
    `edit` applied to the runtime's container."""
    values = {"name": "tiny", "storage_uri": "s3://models/tiny/", **options}
    result = build_manifest(
        ManifestOptions(**values), read_store_for_manifest(store), dockerfile_name=DOCKERFILE_NAME
    )
    documents = yaml.safe_load(json.dumps(list(result.documents)))
    if edit is not None:
        runtime = next(d for d in documents if d["kind"] == "ServingRuntime")
        edit(runtime["spec"]["containers"][0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.yaml"
    path.write_text(dump_documents(documents), encoding="utf-8")
    if result.dockerfile is not None:
        (folder / DOCKERFILE_NAME).write_text(result.dockerfile, encoding="utf-8")
    return path


def pod_processes() -> list[int]:
    """Processes of a rehearsal pod (the unshare command line names the pod address)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{POD_IP}/32".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def scratch_folders() -> set[str]:
    return {p.name for p in Path("/var/tmp").glob("scibert-rehearse-*")}


def host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def codes(report: RehearsalReport) -> set[str]:
    return {f.code for f in report.findings}


# --- the happy path: fetched from S3 by kserve-storage, Ready, answers ------------------------


@pytest.mark.s3
@pytest.mark.server
@pytest.mark.slow
@needs_pod
def test_kserve_store_rehearses_to_ready_and_answers(
    stores: dict[str, Path], s3_env: S3Server, bucket: str, tmp_path: Path
) -> None:
    for path in sorted(stores["kserve"].rglob("*")):
        if path.is_file():
            key = f"tiny/{path.relative_to(stores['kserve']).as_posix()}"
            s3_env.client().upload_file(str(path), bucket, key)
    manifest = write_manifest(tmp_path, stores["kserve"], storage_uri=f"s3://{bucket}/tiny/")
    before, mounts = scratch_folders(), host_mounts()
    result = CliRunner().invoke(
        cli,
        ["rehearse", "-f", str(manifest), "--endpoint-url", s3_env.endpoint, "--timeout", "240"],
    )
    assert result.exit_code == 0, result.stderr
    answers = {a["route"]: a for a in json.loads(result.stdout)["answers"]}
    explain = answers["v2-explain"]["body"]
    assert explain["id"] == "d3b15cad-50a2-4eaf-80ce-8b0a428bd298"
    (item,) = explain["outputs"][0]["data"]
    # The blog's sentence, explained in its own words (the default granularity).
    assert item["words"][:2] == ["Risk", "assessment"] and item["granularity"] == "words"
    assert len(item["words"]) == len(item["importances"])
    infer = answers["v2-infer"]["body"]
    assert {o["name"] for o in infer["outputs"]} >= {"label", "probabilities"}
    assert answers["v2-infer"]["path"] == "/v2/models/tiny/infer"
    err = result.stderr
    assert "fetching s3://" in err and "with kserve-storage" in err
    assert "stand-in: the image scibert-pack-torchserve:0.12.0-cpu is stood in for by" in err
    assert f"private namespaces at {POD_IP}" in err
    assert "container start -> Ready: " in err
    assert "rehearsal passed: the pod became Ready and answered" in err
    # Stopped and cleaned up: no pod process, no scratch folder, no mount left on the host.
    assert pod_processes() == []
    assert scratch_folders() == before
    assert host_mounts() == mounts


# --- what it must catch, each broken on purpose ---------------------------------------------


def _args(container: dict[str, Any]) -> None:
    container["args"] = [
        a.replace("=/mnt/models/model-store", "=/models/model-store") for a in container["args"]
    ]


def _ports(container: dict[str, Any]) -> None:
    container["ports"][0]["containerPort"] = 8080
    container["livenessProbe"]["httpGet"]["port"] = 8080
    container["readinessProbe"] = {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 2}


def _user(container: dict[str, Any]) -> None:
    container["securityContext"]["runAsUser"] = 4242


def _early(container: dict[str, Any]) -> None:
    # Answers {"ready": true} as soon as the front end is up, workers loaded or not.
    container["readinessProbe"] = {
        "httpGet": {"path": "/v2/health/ready", "port": 8085},
        "periodSeconds": 1,
    }


# (store profile, edit of the runtime's container, manifest options, the findings expected,
# a pinned piece of their text or the container log, the routes answered anyway)
BROKEN: list[Any] = [
    pytest.param(
        "local",
        None,
        {},
        {"loopback-bind", "model-store-path", "listens-on-loopback"},
        "the container listens on 127.0.0.1:8085 only",
        [],
        id="local-profile-store",
    ),
    pytest.param(
        "kserve",
        _args,
        {},
        {"path-outside-mount", "container-exited"},
        "--model-store directory not found: /models/model-store",
        [],
        id="model-store-outside-mnt-models",
    ),
    pytest.param(
        "kserve",
        _ports,
        {},
        {"container-port", "probe-port", "port-closed"},
        "nothing listens on port 8080",
        [],
        id="runtime-ports-differ-from-config",
    ),
    pytest.param(
        "kserve",
        _user,
        {},
        {"cannot-write", "run-as-user"},
        "Could not create directory",
        ["v2-explain", "v2-infer"],
        id="run-as-user-cannot-write",
    ),
    # v1 here: the early probe's pod still answers, on the v1 routes.
    pytest.param(
        "kserve",
        _early,
        {"protocol": "v1"},
        {"ready-before-model"},
        "the probe passes before the model can answer",
        ["v1-explain", "v1-predict"],
        id="readiness-before-model-v1",
    ),
]


@pytest.mark.parametrize(("profile", "edit", "options", "expected", "pinned", "answered"), BROKEN)
@pytest.mark.server
@pytest.mark.slow
@needs_pod
def test_rehearsal_catches(
    stores: dict[str, Path],
    tmp_path: Path,
    profile: str,
    edit: Edit | None,
    options: dict[str, Any],
    expected: set[str],
    pinned: str,
    answered: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = write_manifest(tmp_path, stores["kserve"], edit, **options)
    # A relative --store, as the README writes it: the pod must still mount the right folder.
    monkeypatch.chdir(stores[profile].parent)
    store = Path(stores[profile].name)
    report = rehearse(RehearsalSettings(manifest=manifest, store=store, timeout_s=120))
    assert not report.ok
    assert expected <= codes(report), report.findings
    text = "\n".join(str(f) for f in report.findings) + "\n" + report.log_tail
    assert pinned in text
    assert [a.route for a in report.answers if a.ok] == answered
    assert pod_processes() == []


def test_stock_runtime_is_reported_from_the_manifest(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    """KServe's stock image cannot run here: what its wrapper lacks comes from the manifest."""
    manifest = write_manifest(tmp_path, stores["kserve"], runtime="kserve-torchserve")
    report = rehearse(RehearsalSettings(manifest=manifest, store=stores["kserve"]))
    assert report.mode == "static" and not report.ok and report.answers == ()
    assert {"stock-runtime", "wrapper-v2-explain", "stock-runtime-libraries"} <= codes(report)
    wrapper = next(f for f in report.findings if f.code == "wrapper-v2-explain")
    assert "/v2/models/tiny/explain route: v2 explanations return 404" in wrapper.message


@pytest.mark.server
@pytest.mark.slow
@needs_pod
def test_ctrl_c_stops_the_pod_and_cleans_up(stores: dict[str, Path], tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, stores["kserve"])
    before, mounts = scratch_folders(), host_mounts()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "scibert-pack"),
            *("rehearse", "-f", str(manifest), "--store", str(stores["kserve"])),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # bounded by the rehearsal's own timeout
        seen.append(line.decode())
        if b"kubelet: " in line and pod_processes():
            break
    assert pod_processes(), "".join(seen)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) != 0, "".join(seen)
    deadline = time.monotonic() + 10
    while pod_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pod_processes() == []
    assert scratch_folders() == before
    assert host_mounts() == mounts


@needs_pod
def test_the_pod_cannot_change_the_hosts_files(stores: dict[str, Path], tmp_path: Path) -> None:
    """Even a container that runs as root sees the host's files read-only."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as name:
        target = Path(name) / "written-by-the-pod"

        def hostile(container: dict[str, Any]) -> None:
            container["securityContext"].update(runAsUser=0, runAsNonRoot=False)
            container["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
            script = f"mount -o remount,rw / || true; touch {target}"
            container["command"], container["args"] = ["sh", "-c", script], []

        manifest = write_manifest(tmp_path, stores["kserve"], hostile)
        report = rehearse(RehearsalSettings(manifest=manifest, store=stores["kserve"]))
        assert "container-exited" in codes(report)
        assert "Read-only file system" in report.log_tail
        assert "permission denied" in report.log_tail  # no CAP_SYS_ADMIN to remount
        assert not target.exists()


@pytest.mark.server
@pytest.mark.slow
def test_partial_rehearsal_is_marked_and_still_serves(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    """Without namespaces (no root): /mnt/models substituted, loopback, no uid change."""
    manifest = write_manifest(tmp_path, stores["kserve"])
    settings = RehearsalSettings(
        manifest=manifest, store=stores["kserve"], isolation="none", timeout_s=180
    )
    try:
        report = rehearse(settings)
    except PortInUseError as err:
        pytest.skip(f"config.properties' ports are taken on this machine: {err}")
    assert report.mode == "partial" and report.ok, report.findings
    assert report.not_rehearsed[0].startswith("PARTIAL REHEARSAL (--isolation none)")
    assert [a.route for a in report.answers] == ["v2-explain", "v2-infer"]


# --- the parts, without a server ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pins"),
    [
        (
            "FROM python:3.11-slim-bookworm\nRUN pip install torch==2.13.0\n"
            "RUN pip install \\\n    torchserve==0.12.0 \\\n    transformers==4.46.3 \\\n"
            "    captum==0.8.0 \\\n    safetensors\n",
            {
                "python": "3.11",
                "torch": "2.13.0",
                "torchserve": "0.12.0",
                "transformers": "4.46.3",
                "captum": "0.8.0",
            },
        ),
        (
            "FROM pytorch/torchserve:0.12.0-cpu\nRUN pip install transformers==4.40.0 \\\n"
            "    captum==0.7.0  # pinned\n",
            {"python": "3.9", "torchserve": "0.12.0", "transformers": "4.40.0", "captum": "0.7.0"},
        ),
    ],
    ids=["python-image", "torchserve-image"],
)
def test_dockerfile_pins(text: str, pins: dict[str, str]) -> None:
    assert dockerfile_pins(text) == pins


def _root(container: dict[str, Any]) -> None:
    container["securityContext"]["runAsUser"] = 0


def _no_readiness(container: dict[str, Any]) -> None:
    del container["readinessProbe"]


def _ts_config(container: dict[str, Any]) -> None:
    container["args"] = [
        "--ts-config=/mnt/models/conf/config.properties" if a.startswith("--ts-config") else a
        for a in container["args"]
    ]


# Seen before the start, without a server: (store profile, edit, Dockerfile text, codes).
BEFORE_START: list[Any] = [
    pytest.param("kserve", None, None, set(), id="as-written"),
    pytest.param("local", None, None, {"loopback-bind", "model-store-path"}, id="local-store"),
    pytest.param("kserve", _args, None, {"path-outside-mount"}, id="model-store-arg"),
    pytest.param("kserve", _ts_config, None, {"path-not-in-store"}, id="ts-config-missing"),
    pytest.param("kserve", _ports, None, {"container-port", "probe-port"}, id="ports"),
    pytest.param("kserve", _root, None, {"run-as-root", "run-as-user"}, id="root-non-root"),
    pytest.param("kserve", _no_readiness, None, {"no-readiness-probe"}, id="no-readiness"),
    pytest.param(
        "kserve",
        None,
        "FROM python:3.11-slim-bookworm\nRUN pip install transformers==4.0.0\n",
        {"stand-in-versions"},
        id="dockerfile-pins-other-versions",
    ),
    # Versions checked against what `manifest` would write, and said so.
    pytest.param("kserve", None, "", {"no-dockerfile"}, id="no-dockerfile-beside-manifest"),
]


@pytest.mark.parametrize(("profile", "edit", "docker", "expected"), BEFORE_START)
def test_checks_before_start(
    stores: dict[str, Path],
    tmp_path: Path,
    profile: str,
    edit: Edit | None,
    docker: str | None,
    expected: set[str],
) -> None:
    manifest = write_manifest(tmp_path, stores["kserve"], edit)
    if docker == "":
        (tmp_path / DOCKERFILE_NAME).unlink()
    elif docker is not None:
        (tmp_path / DOCKERFILE_NAME).write_text(docker, encoding="utf-8")
    found = check_before_start(
        read_plan(manifest),
        stores[profile],
        read_store_for_manifest(stores[profile]),
        isolated=True,
        dockerfile=tmp_path / DOCKERFILE_NAME,
    )
    assert {f.code for f in found} == expected, found
    if docker:
        (finding,) = found
        assert "transformers 4.0.0 (environment: " in finding.message


def test_version_differences_name_each_pin(stores: dict[str, Path]) -> None:
    pins = {"python": "3.11", "transformers": "4.46.3", "captum": "0.8.0"}
    have = {"python": "3.11", "transformers": "5.24.0"}
    assert version_differences(pins, have) == [
        "transformers 4.46.3 (environment: 5.24.0)",
        "captum 0.8.0 (environment: not installed)",
    ]
    # The Dockerfile `manifest` writes for a store built here pins this environment.
    options = ManifestOptions(name="tiny", storage_uri="s3://m/t/")
    written = build_manifest(options, read_store_for_manifest(stores["kserve"])).dockerfile
    assert written is not None
    assert version_differences(dockerfile_pins(written), environment_versions()) == []


def test_pod_plan_applies_kubernetes_defaults_and_kserve_merge(
    stores: dict[str, Path],
) -> None:
    documents = yaml.safe_load(
        json.dumps(
            list(
                build_manifest(
                    ManifestOptions(name="tiny", storage_uri="s3://m/t/"),
                    read_store_for_manifest(stores["kserve"]),
                ).documents
            )
        )
    )
    runtime = next(d for d in documents if d["kind"] == "ServingRuntime")
    container = runtime["spec"]["containers"][0]
    container["livenessProbe"] = {"tcpSocket": {"port": "http1"}}
    container["env"].append({"name": "STORE", "value": "/mnt/models"})
    container["args"].append("--log-config=$(STORE)/log.xml")
    isvc = next(d for d in documents if d["kind"] == "InferenceService")
    isvc["spec"]["predictor"]["model"]["env"] = [{"name": "STORE", "value": "/srv"}]
    isvc["spec"]["predictor"]["model"]["args"] = ["--foo"]
    plan = plan_from_documents(documents, source="test")
    assert plan.container is not None
    live = plan.container.liveness
    assert live is not None
    assert (live.kind, live.port, live.period_s, live.timeout_s, live.failure_threshold) == (
        "tcpSocket",
        8085,
        10.0,
        1.0,
        3,
    )
    assert plan.container.argv[-2:] == ("--log-config=/srv/log.xml", "--foo")
    assert plan.container.security.run_as_user == 1000
    assert plan.container.security.no_new_privileges
    assert plan.container.security.capabilities == ()  # drop: [ALL]


def test_stand_in_masks_hide_only_what_the_user_cannot_enter() -> None:
    """A stand-in Python under /root (0700): only the folder the user cannot enter is masked."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as name:
        root = Path(name)
        root.chmod(0o755)
        closed = root / "closed"
        (closed / "env" / "bin").mkdir(parents=True)
        (root / "open" / "env").mkdir(parents=True)
        closed.chmod(0o700)
        masks = stand_in_masks((closed / "env", root / "open" / "env"), 4242, (4242,))
        assert masks == [(closed, (closed / "env",))]
        assert stand_in_masks((closed / "env",), os.stat(closed).st_uid, ()) == []


@pytest.mark.parametrize(
    ("stand_in", "shown_again"),
    [
        pytest.param(Path("/tmp/ci-clone/.venv"), True, id="checkout-under-tmp"),
        pytest.param(Path("/opt/env"), False, id="elsewhere"),
    ],
)
def test_a_stand_in_under_tmp_is_shown_again_over_the_pods_own_tmp(
    tmp_path: Path, stand_in: Path, shown_again: bool
) -> None:
    """The pod's /tmp is a fresh tmpfs: a checkout (and its .venv) under the host's /tmp would
    vanish inside it, and the container would find no Python (seen with a clone in /tmp)."""
    spec = PodProcessSpec(
        argv=("torchserve",), env={}, store=tmp_path / "store", workdir=tmp_path / "work",
        uid=1000, gid=1000, groups=(), read_only_root=False, no_new_privileges=True,
        isolated=True, stand_in=(stand_in,),
    )  # fmt: skip
    script = pod_script(spec, tmp_path / "stage").splitlines()
    tmpfs = next(i for i, line in enumerate(script) if line.endswith("pod-tmp /tmp"))
    staged = [i for i, line in enumerate(script) if "stage-tmp-0" in line]
    if not shown_again:
        assert staged == []
        return
    point = tmp_path / "stage-tmp-0"
    assert point.is_dir()
    assert staged[0] < tmpfs < staged[1]
    assert script[staged[0]].endswith(f"--rbind {stand_in} {point}")
    assert script[staged[1]].endswith(f"--rbind {point} {stand_in}")
    assert script[staged[1] - 1] == f"mkdir -p {stand_in}"


class _Management(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"[]")

    def do_GET(self) -> None:
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _workers(*statuses: str) -> bytes:
    workers = [{"id": str(9000 + i), "status": s} for i, s in enumerate(statuses)]
    return json.dumps([{"modelName": "tiny", "workers": workers}]).encode()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param((200, _workers("READY", "STARTING")), 1, id="one-ready"),
        pytest.param((200, _workers("STARTING", "UNLOADING")), 0, id="none-ready"),
        pytest.param((404, b'{"code": 404}'), None, id="unknown-model"),
        pytest.param((400, b"Token Authorization failed"), None, id="token-auth"),
        pytest.param((200, b"[" * 100_000), None, id="hostile-body"),
    ],
)
def test_ready_workers_reads_the_management_api(
    answer: tuple[int, bytes], expected: int | None
) -> None:
    """What the rehearsal asks at the moment of Ready: a worker that can answer, or not."""
    handler = type("Handler", (_Management,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert ready_workers("127.0.0.1", server.server_address[1], "tiny", 5.0) == expected
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_fetch_shows_the_error_not_pythons_frames() -> None:
    from scibert_pack.kserve.rehearsal import _without_traceback

    stderr = (
        "2026-12-02 INFO Copying contents of s3://m/t/ to local\n"
        "Traceback (most recent call last):\n"
        '  File "<string>", line 3, in <module>\n'
        '  File "/x/kserve_storage.py", line 374, in download\n'
        "    model_dir = Storage._download_s3(\n"
        "RuntimeError: S3 authentication failed for s3://m/t/\n"
    )
    assert _without_traceback(stderr) == [
        "2026-12-02 INFO Copying contents of s3://m/t/ to local",
        "RuntimeError: S3 authentication failed for s3://m/t/",
    ]
