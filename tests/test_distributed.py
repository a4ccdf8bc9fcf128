"""Several ranks (gloo on CPU), as users start them: torchrun, or the launcher's variables set by
hand (what a multi-node job with a rendezvous endpoint does). Two ranks on tiny models."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from icmh_hub import read_metadata
from icmh_hub.cli import main
from icmh_hub.core.distributed import TIMEOUT_ENV, World, agree
from icmh_hub.errors import DistributedError, IcmhError, InvalidArgumentError
from icmh_hub.training.trainer import CHECKPOINT, Trainer

TRAIN = ["train", "--codec", "mbt2018-mean", "--q", "1", "--task", "cls", "--crop", "64", "--middle-dim", "8",
         "--batch-size", "4", "--steps", "4", "--no-pretrained", "--quiet", "--checkpoint-every", "0"]
RESULT = "mbt2018-mean-cls-q1.safetensors"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate([(72, 80), (64, 96), (50, 70), (80, 64), (64, 64), (70, 90)]):
        folder = root / f"class_{i % 2}"
        folder.mkdir(exist_ok=True)
        smooth = np.kron(rng.random((height // 8 + 1, width // 8 + 1, 3)), np.ones((8, 8, 1)))[:height, :width]
        Image.fromarray((smooth * 255).astype("uint8")).save(folder / f"{i}.png")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **extra)


JOB = """# one torchrun job, as a user would script it: icmh-hub commands, one after the other, in each
# rank's process (they join the same process group once)
import json, sys
from icmh_hub.cli import main
for args in json.loads(sys.argv[1]):
    try:
        main(args, standalone_mode=False)
    except SystemExit as exit:
        if exit.code:
            raise
"""


def torchrun_commands(commands: list[list[str]], tmp_path: Path, ranks: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N job.py``, every rank running the icmh-hub
    ``commands`` in turn (one process start-up for several commands: the suite's time)."""
    job = tmp_path / "job.py"
    job.write_text(JOB)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", str(job), json.dumps(commands)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


def start_ranks(args: list[str], ranks: int = 2, **env: str) -> list[subprocess.Popen]:
    """The ranks started by hand with the variables a launcher sets (a static rendezvous endpoint)."""
    port = str(_free_port())
    return [
        subprocess.Popen([sys.executable, "-m", "icmh_hub.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(RANK=str(r), WORLD_SIZE=str(ranks), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(ranks),
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **env))
        for r in range(ranks)
    ]


def one_process(images, out: Path, **options) -> Trainer:
    return Trainer("mbt2018-mean", 1, "cls", images, steps=4, batch_size=4, crop=64, middle_dim=8, pretrained=False,
                   progress=False, checkpoint_every=0, out_dir=out, **options)


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max |a - b| over all tensors / max |a|. Adam divides each gradient by its own magnitude, so a
    coordinate whose gradient is at rounding level (about 1e-9 here) moves by a sizeable fraction
    of the learning rate in either run: the runs agree to rounding in the gradients (1e-7) and to
    about 3e-5 of the weights after 4 steps at the default learning rate."""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a) / max(a[k].abs().max().item() for k in a)


def _cls_folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((48, 40, 3)) * 255).astype("uint8")).save(root / label / f"{i}.png")
    return root


def test_torchrun_trains_resumes_and_evaluates_as_one_process_would(images, tmp_path):
    """torchrun, 2 ranks. train: global batch 4 (2 per rank), resuming the checkpoint a one-process
    run wrote at step 2 (another number of ranks); after steps 2-3 the one adapter file (rank 0
    writes, rank 1 does not) equals a one-process run's of 4 steps, and its record says 2 ranks of
    2 images. eval: each rank codes every other image; the gathered records give the metrics of
    one process, and rank 0 alone prints and writes the JSON."""
    straight = one_process(images, tmp_path / "straight")
    straight.fit()
    out = tmp_path / "two"
    assert one_process(images, out).fit(stop_at=2) is None
    data = _cls_folder(tmp_path / "val")
    evaluation = ["eval", "--codec", "mbt2018-mean", "--q", "1", "--task", "cls", "--data", str(data), "--size", "64", "--no-pretrained"]
    single = CliRunner().invoke(main, [*evaluation, "--json", str(tmp_path / "one.json")])
    assert single.exit_code == 0, single.output

    done = torchrun_commands([[*TRAIN, "--data", str(images), "--out", str(out), "--resume"],
                              [*evaluation, "--json", str(tmp_path / "two.json")]], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"wrote {out / RESULT}") == 1 and done.stdout.count("top1") == 1  # rank 0 only
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", CHECKPOINT, RESULT])
    difference = relative_difference(load_file(str(tmp_path / "straight" / RESULT)), load_file(str(out / RESULT)))
    assert difference < 1e-4, difference  # measured: 2.7e-5
    training = read_metadata(out / RESULT)["info"]["training"]
    assert (training["world_size"], training["batch_per_rank"], training["steps"]) == (2, 2, 4)
    assert training["world_sizes"] == [{"from_step": 0, "world_size": 1}, {"from_step": 2, "world_size": 2}]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["images"] == one["images"] == 6
    assert two["metrics"] == one["metrics"]


def test_a_killed_rank_stops_the_others_with_one_line(images, tmp_path):
    """SIGKILL to rank 1 mid-run: rank 0 does not hang; it exits 1 within the timeout, one line."""
    out = tmp_path / "killed"
    args = [*TRAIN, "--data", str(images), "--out", str(out), "--steps", "400", "--checkpoint-every", "1"]
    ranks = start_ranks(args, **{TIMEOUT_ENV: "60"})
    deadline = time.monotonic() + 180
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline and ranks[0].poll() is None:
        time.sleep(0.2)
    assert (out / CHECKPOINT).exists(), ranks[0].communicate()[1][-2000:]
    ranks[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = ranks[0].communicate(timeout=90)
    ranks[1].wait()
    assert ranks[0].returncode == 1 and time.monotonic() - killed < 60
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "rank" in last and "Traceback" not in stderr, stderr[-2000:]


def test_a_rank_that_fails_stops_every_rank_naming_it(tmp_path, monkeypatch):
    """agree(): the failed rank raises its own error, every other rank one that names it."""
    import torch.distributed as dist

    gathered = [None, ("DataError", "cannot read image x.png")]
    monkeypatch.setattr(dist, "all_gather_object", lambda out, value: out.__setitem__(slice(None), gathered))
    monkeypatch.setattr(dist, "all_reduce", lambda flag, op=None: flag.fill_(sum(g is not None for g in gathered)))
    with pytest.raises(DistributedError, match=r"rank 1 failed while setting up \(DataError: cannot read image x.png\); rank 0 stops too"):
        agree(None, World(0, 2), "setting up")
    own = InvalidArgumentError("mine")
    with pytest.raises(InvalidArgumentError, match="mine"):
        agree(own, World(1, 2), "setting up")
    gathered[1] = None
    agree(None, World(0, 2), "setting up")  # nobody failed


def test_batch_that_does_not_split_over_the_ranks_is_refused_before_they_meet(images, tmp_path):
    result = CliRunner().invoke(main, [*TRAIN, "--data", str(images), "--out", str(tmp_path), "--batch-size", "5"],
                                env={"WORLD_SIZE": "2", "RANK": "0"})
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "error: --batch-size 5 does not split over 2 ranks; give a multiple of 2 (it is the global batch)"


def test_one_process_world_is_not_distributed():
    world = World()
    assert world.main and not world.distributed and world.shard(range(5)) == [0, 1, 2, 3, 4]
    assert World(1, 2).shard(range(5)) == [1, 3]
    with pytest.raises(IcmhError, match="boom"):
        agree(InvalidArgumentError("boom"), world)
