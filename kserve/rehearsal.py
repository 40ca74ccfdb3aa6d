"""`scibert-pack rehearse`: run a written KServe runtime exactly as a pod would, before applying.

The manifest says what the pod runs (kserve.pod_spec); the store comes from the storageUri
through KServe's own storage initializer library, or from a local folder. The pod is a process
tree in private namespaces (kserve.pod_sandbox) with the project's environment standing in for
the image; the kubelet's probes and the ingress's first requests (kserve.pod_calls) go to the
pod's own address. The result is data: findings with fixes, timings, answers, the log tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from scibert_pack.config import properties
from scibert_pack.errors import InputError, PortInUseError, StoreError
from scibert_pack.kserve.deployment_values import resolve
from scibert_pack.kserve.options import ManifestOptions
from scibert_pack.kserve.pod_calls import (
    Answer,
    ProbeResult,
    ingress_requests,
    ready_workers,
    run_probe,
    send,
)
from scibert_pack.kserve.pod_checks import (
    DOCKERFILE_NAME,
    IMAGE_GID,
    IMAGE_UID,
    Finding,
    check_before_start,
    environment_versions,
)
from scibert_pack.kserve.pod_sandbox import (
    MODEL_ROOT,
    POD_IP,
    Listener,
    PodNetwork,
    PodProcess,
    PodProcessSpec,
    can_isolate,
    listeners,
)
from scibert_pack.kserve.pod_spec import Container, PodPlan, Probe, read_plan
from scibert_pack.kserve.store_info import read_store_for_manifest
from scibert_pack.kserve.traps import check_traps
from scibert_pack.layout import CONFIG_FILE, StoreFacts
from scibert_pack.progress import ProgressSink, silent

Isolation = Literal["auto", "none"]
Mode = Literal["full", "partial", "static"]
# Where TorchServe writes inside the container: logs/ in the working folder; its pid file and
# the unpacked archives in /tmp (tempfile.gettempdir(), java.io.tmpdir).
_WRITE_FAILURE = re.compile(
    r"Permission denied|Read-only file system|Unable to create|AccessDeniedException"
)
# A model that is really ready answers the first request at once; more means it was loading.
READY_GRACE_S = 3.0
_STOCK_CODES = (
    "stock-runtime-libraries",
    "stock-runtime-image",
    "token-auth-wrapper",
    "wrapper-v2-explain",
)


@dataclass(frozen=True)
class RehearsalSettings:
    manifest: Path
    # A local model store; None fetches the InferenceService's storageUri.
    store: Path | None = None
    endpoint_url: str | None = None
    # The name in request URLs; None: the InferenceService's if TorchServe serves it, else
    # the store's model name.
    model_name: str | None = None
    dockerfile: Path | None = None
    # How long to wait for Ready and for the model to answer, from container start.
    timeout_s: float = 300.0
    isolation: Isolation = "auto"
    # The stand-in for the image: the folder of the environment's commands (torchserve, python).
    environment_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)

    def __post_init__(self) -> None:
        if not 1 <= self.timeout_s <= 3600:
            raise InputError(
                f"--timeout must be between 1 and 3600 seconds, got {self.timeout_s:g}",
                fix="pass e.g. --timeout 300",
            )


@dataclass(frozen=True)
class RehearsalReport:
    mode: Mode
    plan: PodPlan
    model_name: str | None
    findings: tuple[Finding, ...]
    # What this run could not rehearse (partial rehearsal, cluster-only features).
    not_rehearsed: tuple[str, ...]
    stand_in: str | None
    # Seconds from container start: when the kubelet would mark the pod Ready, and when the
    # model first answered an inference request.
    ready_after_s: float | None
    answering_after_s: float | None
    answers: tuple[Answer, ...]
    probes: tuple[str, ...]
    log_tail: str

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "problem")

    @property
    def ok(self) -> bool:
        answered = bool(self.answers) and all(a.ok for a in self.answers)
        return self.ready_after_s is not None and answered and not self.problems


def rehearse(settings: RehearsalSettings, progress: ProgressSink = silent) -> RehearsalReport:
    plan = read_plan(settings.manifest)
    with _scratch(settings) as scratch:
        # The pod mounts the store by path: a relative one would be read from another folder.
        store_dir = settings.store.resolve() if settings.store is not None else None
        if plan.stock:
            return _stock_report(plan, settings, store_dir)
        if store_dir is None:
            store_dir = fetch_store(plan.storage_uri, scratch / "models", settings, progress)
        info = read_store_for_manifest(
            store_dir, option="--store" if settings.store is not None else "the storageUri"
        )
        return _Rehearsal(plan, settings, store_dir, info, scratch, progress).run()


def fetch_store(uri: str, dest: Path, settings: RehearsalSettings, progress: ProgressSink) -> Path:
    """The storageUri downloaded by kserve-storage, as the storage-initializer container does."""
    if uri.startswith("pvc://"):
        raise InputError(
            f"storageUri {uri!r} is a PVC, which only a cluster can mount",
            fix="pass --store OUT (the folder you copied into the claim)",
        )
    python = settings.environment_bin / "python"
    env = dict(os.environ)
    if settings.endpoint_url:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    dest.mkdir(parents=True)
    # emptyDir volumes are world-writable: the container's user must be able to read them.
    dest.chmod(0o777)
    progress(f"fetching {uri} with kserve-storage (as KServe's storage initializer would)")
    code = (
        "import sys\n"
        "from kserve_storage import Storage\n"
        "Storage.download(sys.argv[1], sys.argv[2])\n"
    )
    try:
        done = subprocess.run(
            [str(python if python.exists() else sys.executable), "-c", code, uri, str(dest)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StoreError(f"fetching {uri} took more than 30 minutes") from None
    if done.returncode != 0:
        tail = "\n".join(_without_traceback(done.stderr)[-4:])
        fix = "check the URI, the AWS_* variables and --endpoint-url, or pass --store OUT"
        if "No module named 'kserve_storage'" in done.stderr:
            fix = "pip install --no-deps 'kserve-storage>=0.15' (or pass --store OUT)"
        raise StoreError(f"kserve-storage could not fetch {uri}:\n{tail}", fix=fix)
    return dest


def _without_traceback(stderr: str) -> list[str]:
    """The downloader's own lines and the exception's message, without Python's frames."""
    return [
        line
        for line in stderr.strip().splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith("Traceback ")
    ]


@contextlib.contextmanager
def _scratch(settings: RehearsalSettings) -> Iterator[Path]:
    # Outside /tmp: the pod gets its own /tmp, which would hide a folder there.
    base = "/var/tmp" if Path("/var/tmp").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="scibert-rehearse-", dir=base))
    try:
        root.chmod(0o711)  # the container's user must reach its working folder inside
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stock_report(
    plan: PodPlan, settings: RehearsalSettings, store: Path | None
) -> RehearsalReport:
    info = read_store_for_manifest(store, option="--store") if store is not None else None
    options = ManifestOptions(
        name=plan.isvc_name,
        storage_uri=plan.storage_uri,
        protocol=plan.protocol,
        runtime="kserve-torchserve",
        runtime_version=plan.runtime_version,
        gpu=plan.gpu,
    )
    r = resolve(options, info)
    findings = [
        Finding(
            "stock-runtime",
            f"the InferenceService runs KServe's stock {plan.runtime_name!r} runtime: "
            f"pytorch/torchserve-kfs:{r.runtime_version} with KServe's Python wrapper in front "
            "of TorchServe, an image this environment cannot stand in for, so nothing was "
            "started",
            "write the manifest with --runtime scibert-pack (our runtime runs TorchServe "
            "directly) and rehearse that",
        )
    ]
    findings += [
        Finding(w.code, w.message, w.fix) for w in check_traps(r) if w.code in _STOCK_CODES
    ]
    return RehearsalReport(
        mode="static",
        plan=plan,
        model_name=r.model_name,
        findings=tuple(findings),
        not_rehearsed=("the pod: the stock runtime's image is not available here",),
        stand_in=None,
        ready_after_s=None,
        answering_after_s=None,
        answers=(),
        probes=(),
        log_tail="",
    )


class _Rehearsal:
    def __init__(
        self,
        plan: PodPlan,
        settings: RehearsalSettings,
        store: Path,
        info: StoreFacts,
        scratch: Path,
        progress: ProgressSink,
    ) -> None:
        assert plan.container is not None
        self.plan = plan
        self.container: Container = plan.container
        self.settings = settings
        self.store = store
        self.info = info
        self.scratch = scratch
        self.progress = progress
        self.findings: list[Finding] = []
        self.not_rehearsed: list[str] = []
        self.probes: list[str] = []
        isolated, why = can_isolate()
        if settings.isolation == "none":
            isolated, why = False, "--isolation none"
        self.isolated = isolated
        if not isolated:
            self.not_rehearsed += [
                f"PARTIAL REHEARSAL ({why}): no private namespaces; /mnt/models is replaced by "
                f"{store} in the command line, config.properties is served from a copy bound "
                "to 127.0.0.1 with that path, the container runs as the current user "
                "(no runAsUser), on loopback instead of the pod address, with its own TMPDIR",
            ]
        self.model_name = self._model_name()

    # ---------------------------------------------------------------------------------------
    def run(self) -> RehearsalReport:
        self.findings += check_before_start(
            self.plan,
            self.store,
            self.info,
            isolated=self.isolated,
            dockerfile=self.settings.dockerfile or self.settings.manifest.parent / DOCKERFILE_NAME,
        )
        if self.container.working_dir:
            self.not_rehearsed.append(
                f"workingDir {self.container.working_dir}: the rehearsal runs in an empty "
                "folder instead"
            )
        stand_in = (
            f"the image {self.container.image} is stood in for by this environment "
            f"({self.settings.environment_bin}: Python {sys.version.split()[0]}, "
            + ", ".join(f"{d} {v}" for d, v in environment_versions().items() if d != "python")
            + ") and the host's java"
        )
        self.not_rehearsed += [
            "resource requests and limits (CPU, memory, GPU), image pulls, the storage "
            "initializer's container itself, Knative's queue-proxy and activator",
        ]
        if self.container.startup is not None:
            self.not_rehearsed.append(
                "the startupProbe (readiness and liveness are probed from the start instead)"
            )
        if self.container.env_from_cluster:
            self.not_rehearsed.append(
                "env from Secrets/ConfigMaps (unset here): "
                + ", ".join(self.container.env_from_cluster)
            )
        pod = PodProcess(self._process_spec(), self.scratch)
        ready_at: float | None = None
        answering_at: float | None = None
        answers: list[Answer] = []
        network: PodNetwork | None = None
        mounts_before = _host_mounts()
        try:
            self.progress(
                "starting the container "
                + ("in private namespaces at " + POD_IP if self.isolated else "(partial)")
            )
            pod.start()
            netns = pod.wait_namespace() if self.isolated else None
            network = PodNetwork(netns)
            ready_at = self._kubelet(pod, network)
            if self.isolated:
                self._check_no_host_mounts(mounts_before)
            if ready_at is not None:
                answering_at = self._first_answer(pod, network, ready_at)
                if answering_at is not None:
                    answers = self._ingress(network)
            self._scan_writes(pod)
        finally:
            if network is not None:
                network.close()
            pod.stop()
        log_tail = pod.log_tail()
        if self.isolated:
            self._check_no_host_mounts(mounts_before)
        return RehearsalReport(
            mode="full" if self.isolated else "partial",
            plan=self.plan,
            model_name=self.model_name,
            findings=tuple(self.findings),
            not_rehearsed=tuple(self.not_rehearsed),
            stand_in=stand_in,
            ready_after_s=ready_at,
            answering_after_s=answering_at,
            answers=tuple(answers),
            probes=tuple(self.probes),
            log_tail=log_tail,
        )

    # what the pod runs ---------------------------------------------------------------------
    def _process_spec(self) -> PodProcessSpec:
        c = self.container
        sec = c.security
        workdir = self.scratch / "work"
        workdir.mkdir()
        env = dict(c.env)
        # What the container runtime adds: the image's PATH, HOME of the user, HOSTNAME.
        env.setdefault(
            "PATH", f"{self.settings.environment_bin}:/usr/local/sbin:/usr/local/bin:"
            "/usr/sbin:/usr/bin:/sbin:/bin",
        )  # fmt: skip
        uid = sec.run_as_user if sec.run_as_user is not None else IMAGE_UID
        env.setdefault("HOME", str(workdir) if uid == IMAGE_UID else "/")
        env.setdefault("HOSTNAME", f"{self.plan.isvc_name}-predictor-rehearsal")
        argv = c.argv
        if not self.isolated:
            argv = self._partial_argv(argv, workdir)
            tmp = self.scratch / "tmp"
            tmp.mkdir()
            env.update({"TMPDIR": str(tmp), "TEMP": str(tmp), "HOME": str(workdir)})
            return PodProcessSpec(
                argv=argv,
                env=env,
                store=self.store,
                workdir=workdir,
                uid=None,
                gid=None,
                groups=(),
                read_only_root=False,
                no_new_privileges=False,
                isolated=False,
            )
        # The image's WORKDIR belongs to its user; a container runtime looks the gid of a
        # numeric runAsUser up in the image's /etc/passwd (0 when the image has no such user).
        os.chown(workdir, IMAGE_UID, IMAGE_GID)
        workdir.chmod(0o755)
        gid = sec.run_as_group
        if gid is None:
            gid = IMAGE_GID if uid == IMAGE_UID else 0
        groups = tuple(g for g in (sec.fs_group, *sec.supplemental_groups) if g is not None)
        return PodProcessSpec(
            argv=argv,
            env=env,
            store=self.store,
            workdir=workdir,
            uid=uid,
            gid=gid,
            groups=groups,
            read_only_root=sec.read_only_root,
            no_new_privileges=sec.no_new_privileges,
            capabilities=sec.capabilities,
            isolated=True,
            stand_in=_stand_in_paths(self.settings.environment_bin),
        )

    def _partial_argv(self, argv: tuple[str, ...], workdir: Path) -> tuple[str, ...]:
        config = self.store / CONFIG_FILE
        values = properties.parse(config.read_text(encoding="utf-8"))
        copy = workdir.parent / "config.properties"
        lines = [f"# Partial rehearsal copy of {config}: loopback, {MODEL_ROOT} -> {self.store}"]
        for key, value in values.items():
            value = value.replace(MODEL_ROOT, str(self.store))
            if key.endswith("_address"):
                value = value.replace("0.0.0.0", "127.0.0.1")
            lines.append(f"{key}={value}")
        copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
        _check_ports_free(values)
        out = []
        for word in argv:
            if word.startswith("--ts-config="):
                word = f"--ts-config={copy}"
            out.append(word.replace(MODEL_ROOT, str(self.store)))
        return tuple(out)

    def _model_name(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        served = self.info.served_models or (self.info.model_name,)
        if self.plan.isvc_name in served:
            return self.plan.isvc_name
        self.findings.append(
            Finding(
                "url-model-name",
                f"TorchServe serves the model as {served[0]!r}, not as the InferenceService's "
                f"name {self.plan.isvc_name!r}: requests go to /v2/models/{served[0]}/infer",
                "use that name in clients (the rehearsal does)",
                severity="note",
            )
        )
        return served[0]

    # before the start ----------------------------------------------------------------------
    # the kubelet -------------------------------------------------------------------------
    def _kubelet(self, pod: PodProcess, network: PodNetwork) -> float | None:
        c, s = self.container, self.settings
        host = POD_IP if self.isolated else "127.0.0.1"
        readiness, liveness = c.readiness, c.liveness
        start = pod.started_at
        deadline = start + s.timeout_s
        next_ready = start + (readiness.initial_delay_s if readiness else 0.0)
        next_live = start + liveness.initial_delay_s if liveness else float("inf")
        successes = live_failures = 0
        if readiness is None:
            self.probes.append("no readinessProbe: Ready at container start")
            return 0.0
        if readiness.kind not in ("httpGet", "tcpSocket", "exec"):
            self.not_rehearsed.append(f"{readiness.kind} readinessProbe")
        self.progress(f"kubelet: readinessProbe {readiness.describe()} at {host}")
        while time.monotonic() < deadline:
            code = pod.exit_code()
            if code is not None:
                self._problem(
                    "container-exited",
                    f"the container exited with code {code} "
                    f"{time.monotonic() - start:.1f} s after start, before it was Ready: the "
                    "kubelet would restart it (CrashLoopBackOff)",
                    "read the container log below",
                )
                return None
            now = time.monotonic()
            if now >= next_ready:
                result = self._probe(network, pod, readiness, host)
                self._record("readiness", now - start, result)
                if result.ok:
                    successes += 1
                    if successes >= readiness.success_threshold:
                        return time.monotonic() - start
                else:
                    successes = 0
                    if (
                        self.isolated
                        and result.refused
                        and self._unreachable(pod, readiness.port, "the kubelet's readinessProbe")
                    ):
                        return None
                next_ready = now + readiness.period_s
            if liveness is not None and now >= next_live:
                result = self._probe(network, pod, liveness, host)
                self._record("liveness", now - start, result)
                live_failures = 0 if result.ok else live_failures + 1
                if live_failures >= liveness.failure_threshold:
                    self._problem(
                        "liveness-restart",
                        f"the livenessProbe failed {live_failures} times in a row "
                        f"({result.detail}) {now - start:.0f} s after start, before the pod "
                        "was Ready: the kubelet would kill and restart the container",
                        "raise the livenessProbe's initialDelaySeconds or failureThreshold "
                        "above the model's load time",
                    )
                    return None
                next_live = now + liveness.period_s
            time.sleep(max(0.05, min(next_ready, next_live, deadline) - time.monotonic()))
        self._problem(
            "not-ready",
            f"the pod was not Ready {s.timeout_s:.0f} s after start (last readiness probe: "
            f"{self.probes[-1].strip() if self.probes else 'none ran'})",
            "read the container log below; raise --timeout for a slow model",
        )
        return None

    def _probe(self, network: PodNetwork, pod: PodProcess, probe: Probe, host: str) -> ProbeResult:
        if probe.kind == "exec":
            # Runs inside the container through nsenter, from any thread.
            return run_probe(probe, host, pod.exec_in_pod)
        return network.run(partial(run_probe, probe, host))

    def _record(self, kind: str, at: float, result: ProbeResult) -> None:
        line = f"{at:6.1f} s  {kind}: {result.detail}"
        self.probes.append(line)
        self.progress(f"kubelet: {line.strip()}")

    def _unreachable(self, pod: PodProcess, port: int | None, who: str) -> bool:
        """A refused connection while the server listens elsewhere: it will stay refused."""
        assert pod.pid is not None
        first = listeners(pod.pid)
        if not first:
            return False  # still starting
        time.sleep(2.0)  # the server opens its ports one after another
        seen = listeners(pod.pid)
        if seen != first or any(_reaches(item, port) for item in seen):
            return False
        shown = ", ".join(str(item) for item in seen)
        on_port = [item for item in seen if item.port == port]
        if on_port:
            self._problem(
                "listens-on-loopback",
                f"the container listens on {on_port[0]} only ({shown}): "
                f"{who} to {POD_IP}:{port} is refused, as it would be in the cluster, where "
                "the kubelet and the ingress reach the pod at its address",
                "rebuild the store with `scibert-pack build --profile kserve` (binds 0.0.0.0)",
            )
        else:
            self._problem(
                "port-closed",
                f"nothing listens on port {port}: {who} is refused; the container listens on "
                f"{shown} (config.properties: inference on {self.info.inference_port})",
                f"use port {self.info.inference_port} in containerPort and both probes",
            )
        return True

    def _ready_before_model(self, what: str) -> None:
        self._problem(
            "ready-before-model",
            f"{what}: the probe passes before the model can answer, so a model that never loads "
            "would look Ready too",
            "probe for a READY worker (the readinessProbe `scibert-pack manifest` writes asks the "
            "management API); TorchServe's /ping and /v2/health/* answer 200 while the workers "
            "load or fail",
        )

    def _first_answer(self, pod: PodProcess, network: PodNetwork, ready_at: float) -> float | None:
        """The ingress sends traffic the moment the pod is Ready: does the model answer then,
        or does the request wait (in TorchServe's queue) or fail while the model loads?"""
        port = self._port()
        host = POD_IP if self.isolated else "127.0.0.1"
        # The moment the kubelet saw Ready: does TorchServe have a worker that can answer?
        workers = network.run(
            partial(ready_workers, host, self.info.management_port, self.model_name, 5.0)
        )
        early = workers == 0
        if early:
            self._ready_before_model(
                f"the readinessProbe passed {ready_at:.1f} s after start while the model had no "
                "READY worker (TorchServe's management API)"
            )
        route, path, payload = ingress_requests(self.plan.protocol, self.model_name)[1]
        deadline = pod.started_at + self.settings.timeout_s
        first: Answer | None = None
        while pod.exit_code() is None:
            wait = deadline - time.monotonic()
            if wait < 1:
                break
            answer = network.run(partial(send, route, host, port, path, payload, wait))
            first = first or answer
            if answer.ok:
                answered = time.monotonic() - pod.started_at
                if answered - ready_at > READY_GRACE_S and not early:
                    how = "was" if answer is first else f"got {first.problem}; the model was"
                    self._ready_before_model(
                        f"the readinessProbe passed {ready_at:.1f} s after start, but the model "
                        f"answered only after {answered:.1f} s (the first request after Ready "
                        f"{how} answered {answered - ready_at:.1f} s later)"
                    )
                return answered
            self.progress(f"ingress: request after Ready: {answer.problem}")
            refused = answer.problem == "connection refused"
            if refused and self.isolated and self._unreachable(pod, port, "the ingress' request"):
                return None
            time.sleep(0.5)
        self._problem(
            "never-answered",
            f"the pod was Ready after {ready_at:.1f} s, but {path} never answered "
            + (f"(first try: {first.problem}; body: {str(first.body)[:300]})" if first else ""),
            "read the container log below",
        )
        return None

    def _ingress(self, network: PodNetwork) -> list[Answer]:
        host = POD_IP if self.isolated else "127.0.0.1"
        port = self._port()
        answers = []
        for route, path, payload in ingress_requests(self.plan.protocol, self.model_name):
            self.progress(f"ingress: POST {path}")
            answer = network.run(partial(send, route, host, port, path, payload, 180))
            answers.append(answer)
            if not answer.ok:
                self._problem(
                    f"{route}-failed",
                    f"POST {path} failed: {answer.problem}; body: {str(answer.body)[:300]}",
                    "read the container log below",
                )
        return answers

    def _port(self) -> int:
        c = self.container
        if c.ports:
            return c.ports[0]
        if c.readiness and c.readiness.port:
            return c.readiness.port
        return self.info.inference_port

    def _scan_writes(self, pod: PodProcess) -> None:
        lines = [line for line in pod.log_text().splitlines() if _WRITE_FAILURE.search(line)]
        if not lines:
            return
        c = self.container.security
        uid = c.run_as_user if c.run_as_user is not None else IMAGE_UID
        self._problem(
            "cannot-write",
            f"the container's user (uid {uid}) could not write where TorchServe writes "
            "(logs/ in the working folder, its pid file and the unpacked archive in /tmp): "
            + " | ".join(line.strip()[:200] for line in lines[:3]),
            f"run as the image's user (runAsUser: {IMAGE_UID}), or give that user a writable "
            "working folder and /tmp (no readOnlyRootFilesystem, or emptyDir volumes there)",
        )

    def _check_no_host_mounts(self, before: set[str]) -> None:
        leaked = sorted(
            point
            for point in _host_mounts() - before
            if point in ("/mnt", MODEL_ROOT, "/tmp") or point.startswith(str(self.scratch))
        )
        if leaked and not any(f.code == "mount-leak" for f in self.findings):
            self._problem(
                "mount-leak",
                f"the rehearsal's mounts appeared on the host: {', '.join(leaked)}",
                "make / private in the pod's mount namespace (a bug of scibert-pack: report it)",
            )

    def _problem(self, code: str, message: str, fix: str) -> None:
        self.findings.append(Finding(code, message, fix))

    def _note(self, code: str, message: str, fix: str) -> None:
        self.findings.append(Finding(code, message, fix, severity="note"))


def _check_ports_free(config: dict[str, str]) -> None:
    """A partial rehearsal shares the host's loopback: its ports must be free there."""
    ports = [urlsplit(v).port for k, v in config.items() if k.endswith("_address") and "://" in v]
    ports += [int(v) for k, v in config.items() if k.endswith("_port") and v.isdigit()]
    for port in sorted({p for p in ports if p}):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as err:
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is in use ({err.strerror}): a partial rehearsal "
                    "runs the server on this machine's loopback with config.properties' ports",
                    fix="stop what listens there (see `ss -ltnp`), or rehearse as root for a "
                    "full rehearsal in the pod's own network namespace",
                ) from err


def _stand_in_paths(environment_bin: Path) -> tuple[Path, ...]:
    """The folders the stand-in image runs from: the environment, its base Python, java."""
    found = [environment_bin.parent.resolve(), Path(sys.base_prefix).resolve()]
    python = environment_bin / "python"
    if python.exists():
        found.append(python.resolve().parent.parent)
    java = shutil.which("java")
    if java:
        found.append(Path(java).resolve().parent.parent)
    return tuple(dict.fromkeys(found))


def _reaches(item: Listener, port: int | None) -> bool:
    return item.port == port and item.host in ("0.0.0.0", "::", POD_IP)


def _host_mounts() -> set[str]:
    points = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4:
                points.add(fields[4])
    return points
