"""Hostile conditions through the real command line: a crafted checkpoint, a full disk, a read-only
folder, user errors. Each ends in one clear message and a non-zero exit, with nothing lost or faked."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dpo_exp.report.runs import read_runs
from dpo_exp.storage import digests_of, write_json_atomically
from dpo_exp.training.checkpoints import check_checkpoint, digests_file
from dpo_exp.training.metrics_file import read_metrics
from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST, FAST_MODEL, FAST_TRAINER, SINGLE_RUN, train_py

pytestmark = pytest.mark.slow

CHECKPOINTS = ["trainer.max_steps=4", "checkpoint.every_n_steps=2"]


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_sharded_checkpoint_is_refused_before_anything_runs(tmp_path: Path):
    folder = tmp_path / "downloaded" / "step000004.ckpt"
    folder.mkdir(parents=True)
    marker = tmp_path / "payload_ran"
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    torch.save({"loops": {}, "global_step": 4}, folder / "meta.pt")
    write_json_atomically({"files": digests_of([folder], folder.parent), "config": {}}, digests_file(folder))
    result = train_py(*FAST, "strategy=fsdp", f"resume={folder}", f"output_root={tmp_path / 'out'}")
    assert result.returncode != 0
    assert f"sharded checkpoint {folder} refused: its .metadata refers to posix.system" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not [path for path in (tmp_path / "out").rglob("*.yaml") if path.parent.name != ".hydra"]


def namespaces_available() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"]).returncode == 0


def train_on_small_disk(
    mount: Path, size: str, *arguments: str, read_only: bool = False
) -> subprocess.CompletedProcess:
    """`train.py arguments` with a `size` tmpfs at `mount` (a user and mount namespace: no root needed)."""
    mount.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    command = " ".join([sys.executable, "train.py", *arguments])
    # The mount ends with the namespace: copy what the run left, to look at it afterwards.
    script = (
        f"mount -t tmpfs -o {options} tmpfs {mount} && {command}; status=$?; cp -r {mount}/. {mount}.copy"
    )
    script += "; exit $status"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(not namespaces_available(), reason="needs `unshare -rm` (a user and mount namespace)")
def test_a_full_disk_stops_with_one_message_and_leaves_no_truncated_file(tmp_path: Path):
    # 500 KB: room for the run's files and its first checkpoint (about 330 KB), not its second.
    disk = tmp_path / "disk"
    result = train_on_small_disk(disk, "500k", *FAST, *CHECKPOINTS, f"output_root={disk}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("cannot write")]
    assert "step000004.ckpt: No space left on device" in message and "free there, about" in message
    (run_dir,) = Path(f"{disk}.copy").glob("runs/*/*")
    failed = (run_dir / "failed.txt").read_text()
    assert (
        failed.startswith("WriteError: cannot write")
        and "OSError: [Errno 28] No space left on device" in failed
    )
    assert not (run_dir / "summary.json").exists() and not (run_dir / "model").exists()
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["step000002.ckpt", "step000002.ckpt.digests.json"]  # no partial, no truncated step 4
    check_checkpoint(run_dir / "checkpoints" / "step000002.ckpt")


@pytest.mark.skipif(not namespaces_available(), reason="needs `unshare -rm` (a user and mount namespace)")
def test_a_read_only_cache_folder_is_named(tmp_path: Path):
    cache = tmp_path / "cache"
    result = train_on_small_disk(
        cache, "1m", *FAST, "reference.cache=true", f"reference.cache_dir={cache}", f"output_root={tmp_path}",
        read_only=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"cannot write {cache}" in result.stderr and "Read-only file system" in result.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    assert "Read-only file system" in (run_dir / "failed.txt").read_text()


def test_a_user_error_is_one_message_and_hydra_full_error_shows_the_traceback(tmp_path: Path):
    result = train_py(*FAST, "trainer.max_steps=0", f"output_root={tmp_path}")
    assert result.returncode != 0
    assert "trainer.max_steps must be a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr
    full = train_py(*FAST, "trainer.max_steps=0", f"output_root={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0
    assert "Traceback (most recent call last)" in full.stderr and "ConfigError" in full.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=hh_helpful", "data.train_path=/nonexistent.jsonl"], "data.train_path: data file not found"),
        (["beta=0"], "beta must be a finite number > 0"),
    ],
)
def test_a_user_error_is_printed_without_hydras_wrapping(tmp_path: Path, overrides, message):
    result = train_py(*SINGLE_RUN, *FAST_MODEL, *FAST_TRAINER, *overrides, f"output_root={tmp_path}")
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "Error executing job" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr


def test_a_bad_chat_role_is_named_by_file_and_line(tmp_path: Path):
    data = tmp_path / "chat.jsonl"
    answers = '"chosen": [{"role": "assistant", "content": "2"}], '
    answers += '"rejected": [{"role": "assistant", "content": "3"}]'
    good = '{"prompt": [{"role": "user", "content": "1+1"}], ' + answers + "}"
    bad = '{"prompt": [{"role": "usr", "content": "1+2"}], ' + answers + "}"
    data.write_text("\n".join([good] * 20 + [bad] + [good] * 5) + "\n")
    fast = [*SINGLE_RUN, *FAST_MODEL, *FAST_TRAINER]
    result = train_py(
        *fast, "data=pairs", f"data.train_path={data}", "data.val_size=4", f"output_root={tmp_path}"
    )
    assert result.returncode != 0
    assert f"{data}, line 21, field 'prompt': message 0 has role 'usr'" in result.stderr
    assert "Traceback" not in result.stderr


def train_steps(metrics: Path) -> list[int]:
    """The steps of a run's train/loss rows (Lightning logs step n's row as step n - 1)."""
    return [int(step) for step in read_metrics(metrics).dropna(subset=["train/loss"])["step"]]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_checkpoints_exits_128_plus_it_and_resume_auto_continues_in_the_folder(
    tmp_path: Path, stop: signal.Signals
):
    # 40 steps, a checkpoint every 5: the signal lands mid-run, after the first checkpoint.
    arguments = [*FAST, "trainer.max_steps=40", "checkpoint.every_n_steps=5", f"output_root={tmp_path}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, "train.py", *arguments]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # A background job of a non-interactive shell starts with SIGINT ignored; Ctrl-C reaches a
        # terminal's foreground job with its default handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("runs/*/*/checkpoints/step000005.ckpt.digests.json")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(stop)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + stop  # 143, 130: as a shell reports the signal, never 0 or 1
    (run_dir,) = tmp_path.glob("runs/*/*")
    stopped_at = train_steps(run_dir / "metrics.csv")[-1] + 1
    assert (run_dir / "checkpoints" / f"step{stopped_at:06d}.ckpt").exists()  # the step it stopped at
    (line,) = [line for line in stderr.splitlines() if line.startswith(f"stopped by {stop.name}")]
    assert f"the run in {run_dir} is resumable: run the same command with resume=auto" in line
    assert line.endswith(f"(it continues in that folder, from its checkpoint at step {stopped_at})")
    assert "Traceback" not in stderr
    assert not (run_dir / "summary.json").exists()
    assert (run_dir / "failed.txt").read_text() == f"stopped by {stop.name}; resumable (resume=auto)\n"

    resumed = train_py(*arguments, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # the data module resumes mid-epoch exactly
    assert list(tmp_path.glob("runs/*/*")) == [run_dir]  # continued in its own folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 40 and summary["resumed_from"].startswith(str(run_dir))
    assert train_steps(run_dir / "metrics.csv") == list(range(40))  # one curve, each step once
    assert not (run_dir / "failed.txt").exists()
    (record,) = read_runs(tmp_path)  # what `dpo-exp compare` lists: the run once, finished
    assert (record.path, record.status) == (run_dir, "finished")


@pytest.mark.skipif(not namespaces_available(), reason="needs `unshare -rm` (a user and mount namespace)")
def test_a_read_only_output_root_is_named(tmp_path: Path):
    # A read-only mount, not chmod: it refuses writes from root too.
    disk = tmp_path / "disk"
    result = train_on_small_disk(disk, "1m", *FAST, f"output_root={disk}", read_only=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cannot write")]
    assert line.startswith(f"cannot write {disk}/runs/") and line.endswith(": Read-only file system")


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (itself included): its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in [folder, *folder.rglob("*")]
    }


@pytest.mark.parametrize("resume", [None, "auto"])
def test_a_relaunch_into_a_finished_run_folder_writes_nothing_there(tmp_path: Path, resume: str | None):
    run_dir = tmp_path / "finished"
    first = train_py(*FAST, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    before = listing(run_dir)
    again = train_py(*FAST, f"hydra.run.dir={run_dir}", *([f"resume={resume}"] if resume else []))
    assert again.returncode != 0
    assert f"run folder {run_dir} holds a finished run; a finished run is never resumed" in again.stderr
    assert "Traceback" not in again.stderr
    assert listing(run_dir) == before  # no failed.txt, no new .hydra record, no log line, no claim
