"""The SLURM profile against a real single-node SLURM cluster, started here.

munged, slurmctld and slurmd (Debian packages munge and slurm-wlm) run as root, in the foreground, from a
temporary folder: their own munge key and socket, a slurm.conf on free ports, one node with a GPU GRES
backed by /dev/null, no accounting daemon. A small part of the smoke workflow then runs with
``--profile profiles/slurm`` plus a test layer (squeue for job status, short status intervals). The
computing rules must go through sbatch, the local rules must not, and the results must equal those of a
local run. Without the binaries (or without root) the test is skipped, unless NETQUANT_REQUIRE_SLURM=1
(set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smoke_subset import COMPUTING_RULES, LOCAL_RULES, assert_same_results, check_outputs, command, reference, run
from helpers import copy_workflow

DAEMONS = ("munged", "munge", "unmunge", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
TRAINING_RULES = {"train", "prune", "importance", "sweep"}
START_TIMEOUT = 60
RUN_TIMEOUT = 900

PARTITION = "gpu"  # not the cluster's default: jobs only run if the profile's partition setting works
# The layer the test puts on top of profiles/slurm, as a site would: its partition; squeue for the job
# status, since this cluster has no slurmdbd and sacct cannot answer (squeue sees finished jobs for
# MinJobAge = 300 s); short status intervals to keep the run short; SLURM logs of successful jobs kept
# for the test to read.
TEST_LAYER = {
    "default-resources": {"slurm_partition": PARTITION},
    "slurm-status-command": "squeue",
    "slurm-init-seconds-before-status-checks": 1,
    "seconds-between-status-checks": 1,
    "slurm-keep-successful-logs": True,
}


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def _require(reason: str):
    if os.environ.get("NETQUANT_REQUIRE_SLURM") == "1":
        pytest.fail(f"NETQUANT_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Child side of Popen: the daemon gets SIGTERM if the test process dies without cleaning up."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SlurmCluster:
    """munged + slurmctld + slurmd for one node, everything under ``root``; ``env`` points clients at it."""

    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        # The job step launcher of the SLURM executor drops SLURM_* variables (SLURM_CONF too) before it
        # calls srun, so srun would look for the default configuration (/etc/slurm, or the configless
        # cache of a real node), which this throwaway cluster does not write. An srun first on PATH
        # (jobs inherit PATH) points it at this cluster's configuration.
        shim = root / "bin"
        shim.mkdir()
        (shim / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        (shim / "srun").chmod(0o755)
        self.env = dict(os.environ, SLURM_CONF=str(self.conf),
                        PATH=os.pathsep.join([str(shim), SBIN_PATH]))

    def _spawn(self, name: str, args: list[str]) -> None:
        self.procs[name] = subprocess.Popen(
            [_which(name), *args], env=self.env, cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=open(self.root / f"{name}.out", "w"), stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)

    def _wait(self, what: str, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {START_TIMEOUT} s:\n{self.logs()}")

    def _ok(self, *cmd: str, contains: str = "") -> bool:
        try:
            res = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0 and contains in res.stdout

    def start(self) -> None:
        root = self.root
        root.chmod(0o700)  # munged refuses keys and sockets in folders others can write
        sock = root / "munge.socket"
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn("munged", ["--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                               f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                               f"--seed-file={root / 'munged.seed'}"])
        self._wait("munged", lambda: sock.exists() and self._ok(
            "sh", "-c", f'{_which("munge")} -n -S {sock} | {_which("unmunge")} -S {sock}', contains="Success"))

        (root / "state").mkdir()
        (root / "spool").mkdir()
        self.conf.write_text(f"""\
ClusterName=netquant-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
MailProg=/bin/true
# no cgroups, no accounting daemon: a plain container is enough
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# finished jobs stay visible to squeue this long (the executor's status source here)
MinJobAge=300
ReturnToService=2
# the node announces what the profile asks for (16 CPUs, 256 GB, a GPU), whatever the machine has
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs=16 RealMemory=256000 Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=NO MaxTime=INFINITE State=UP
""")
        (root / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File=/dev/null\n")
        (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
        self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self._ok(_which("scontrol"), "ping", contains="UP"))
        self._spawn("slurmd", ["-D", "-N", self.host, "-f", str(self.conf)])
        self._wait("slurmd", lambda: self._ok(_which("sinfo"), "-h", "-N", "-o", "%t", contains="idle"))

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job the controller knows (finished ones for MinJobAge), from scontrol."""
        res = subprocess.run([_which("scontrol"), "show", "job", "--oneliner"], env=self.env,
                             capture_output=True, text=True, timeout=30)
        jobs = {}
        for line in res.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs

    def stop(self) -> None:
        """Cancel what is left, then stop slurmd, slurmctld and munged (the processes started here)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            active = [j for j, f in self.jobs().items() if f.get("JobState") in ("PENDING", "RUNNING", "COMPLETING")]
            if active:
                subprocess.run([_which("scancel"), *active], env=self.env, timeout=30)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and any(
                        f.get("JobState") in ("RUNNING", "COMPLETING") for f in self.jobs().values()):
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        parts = []
        for name in ("munged.out", "munged.log", "slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in DAEMONS + CLIENTS if _which(b) is None]
    if missing:
        _require(f"SLURM/munge binaries not installed ({', '.join(missing)}); "
                 "apt-get install slurm-wlm munge (see .ci/run)")
    if os.geteuid() != 0:
        _require("starting slurmd needs root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_slurm_profile_settings_reach_snakemake(tmp_path, monkeypatch):
    """profiles/slurm's settings are in force (the workflow's profiles/default must not override them)."""
    from snakemake.cli import parse_args

    monkeypatch.chdir(copy_workflow(tmp_path))
    _, args = parse_args(["--profile", "profiles/slurm", "-n"])
    assert args.executor == "slurm"
    assert args.keep_going is True and args.rerun_incomplete is True
    assert args.latency_wait >= 30 and args.retries >= 1 and args.jobs >= 1
    assert TRAINING_RULES <= set(args.set_resources)
    for rule in TRAINING_RULES:
        assert {"gpu", "cpus_per_gpu", "mem_mb", "runtime"} <= set(args.set_resources[rule]), rule


def test_slurm_profile_resources_per_network(tmp_path):
    """At paper scale every training-type job asks for one GPU, and AlexNet's jobs for more memory and time."""
    work = copy_workflow(tmp_path)
    for split in ("train", "val"):  # an ImageNet-layout folder; a dry run reads no image
        (work / "imagenet" / split).mkdir(parents=True)
    res = run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm",
               "--configfile", "config/paper.yaml", "--config", f"imagenet_root={work / 'imagenet'}"],
              work, timeout=300)
    jobs = re.findall(r"^rule (\w+):\n(.*?)^\s+resources: (.*?)$", res.stdout, flags=re.M | re.S)
    seen = {}
    for rule, block, resources in jobs:
        net = re.search(r"wildcards: net=(\w+)", block)
        values = dict(kv.split("=", 1) for kv in resources.split(", "))
        if rule in TRAINING_RULES:
            assert values.get("gpu") == "1" and int(values["cpus_per_gpu"]) >= 1, (rule, values)
            seen.setdefault((rule, net.group(1)), values)
        else:
            assert "gpu" not in values, (rule, values)
    assert {rule for rule, _ in seen} == TRAINING_RULES
    for rule in TRAINING_RULES:
        alexnet, lenet5 = seen[(rule, "alexnet")], seen[(rule, "lenet5")]
        assert int(alexnet["mem_mb"]) > int(lenet5["mem_mb"]) and int(alexnet["runtime"]) > int(lenet5["runtime"])


@pytest.mark.workflow
def test_smoke_subset_runs_through_slurm(slurm, tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory.getbasetemp())
    work = copy_workflow(tmp_path)
    layer = work / "profiles" / "slurm-test"
    layer.mkdir()
    (layer / "config.yaml").write_text(yaml.safe_dump(TEST_LAYER))

    started = time.monotonic()
    try:
        res = run(command("--profile", "profiles/slurm", "--profile", "profiles/slurm-test"), work,
                  timeout=RUN_TIMEOUT, env=slurm.env, log=work / "slurm-run.out")
    except AssertionError as err:
        job_logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                              for p in sorted((work / ".snakemake" / "slurm_logs").rglob("*.log")))
        raise AssertionError(f"{err}\n{job_logs}\n{slurm.logs()}") from None
    print(f"SLURM smoke run: {time.monotonic() - started:.1f} s")
    out = res.stdout

    # Every computing job was submitted with sbatch: Snakemake's line per job, a SLURM log per job ...
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", out)
    assert submitted, out[-3000:]
    by_rule = {}
    for _, slurm_id, log in submitted:
        log = Path(log)
        assert log.is_file() and log.is_relative_to(work / ".snakemake" / "slurm_logs"), log
        assert log.name == f"{slurm_id}.log"
        rule = next(part for part in log.parts if part.startswith("rule_")).removeprefix("rule_")
        by_rule.setdefault(rule, []).append(slurm_id)
    assert set(by_rule) == COMPUTING_RULES, by_rule
    assert len(by_rule["sweep"]) == 3  # baseline k-means; pruned k-means layer by layer and all together
    # ... and the controller ran each of them to completion, the training-type ones with a GPU.
    jobs = slurm.jobs()
    for rule, ids in by_rule.items():
        for slurm_id in ids:
            job = jobs[slurm_id]
            assert job["JobState"] == "COMPLETED" and job["Partition"] == PARTITION, job
            assert job["Comment"].startswith(f"rule_{rule}"), job
            asks_gpu = "gpu" in job.get("TresPerJob", "")
            assert asks_gpu == (rule in TRAINING_RULES), (rule, job.get("TresPerJob"))
    # The local rules ran here, not in SLURM.
    for rule in LOCAL_RULES:
        assert f"localrule {rule}:" in out
        assert not (work / ".snakemake" / "slurm_logs" / f"rule_{rule}").exists()
    assert not any(job["Comment"].startswith(tuple(f"rule_{r}" for r in LOCAL_RULES)) for job in jobs.values())

    check_outputs(work)
    assert_same_results(work, ref)
