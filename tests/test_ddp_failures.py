"""A rank that fails at any step stops every rank within seconds, each with one line naming the
bad image (two gloo ranks started as a launcher starts them; the failure is a real unreadable
file at the position rank 1 reads at that step)."""

from __future__ import annotations

import gc
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icmh_hub.core.distributed import TIMEOUT_ENV
from icmh_hub.errors import DataError
from icmh_hub.training.data import ImageFolder, step_loader, worker_error

from .test_distributed import TRAIN, start_ranks

BATCH, SEED = 4, 42  # 2 images per rank; the recipe's seed
IMAGES = 28  # enough that no image repeats before step 6


def _data(root: Path, bad_step: int) -> Path:
    """A flat folder of small images in which the first image rank 1 reads at ``bad_step`` is not an image."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(root / f"{i:02d}.png")
    order = ImageFolder(root, 64, SEED).order(0)
    bad = ImageFolder(root, 64, SEED).files[int(order[bad_step * BATCH + BATCH // 2])]
    bad.write_bytes(b"not a png at all")
    return bad


def _until_set_up(rank: subprocess.Popen) -> str:
    """Rank 0's stderr up to the line it prints when every rank is set up and training starts."""
    lines = ""
    while not lines.startswith("training ") and "\ntraining " not in lines:
        line = rank.stderr.readline()
        if not line:  # it ended before training started: the assertions report why
            break
        lines += line
    return lines


def _fails_on_every_rank(tmp_path: Path, step: int) -> None:
    bad = _data(tmp_path / "data", step)
    args = [*TRAIN, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--steps", str(step + 2)]
    ranks = start_ranks(args, **{TIMEOUT_ENV: "300"})  # a stall would show as the 60 s timeout below, not the group's
    early = _until_set_up(ranks[0])  # process start-up (seconds to a minute on a busy machine) is not what is timed
    started = time.monotonic()
    try:
        for rank in ranks:  # their output is a few lines: the pipes cannot fill while we wait
            rank.wait(timeout=max(0.1, started + 60 - time.monotonic()))
    except subprocess.TimeoutExpired:
        for rank in ranks:
            rank.kill()
        pytest.fail(f"a failure at step {step} left the ranks waiting for 60 s")
    outputs = [early + ranks[0].stderr.read(), ranks[1].stderr.read()]
    for rank, stderr in enumerate(outputs):
        lines = stderr.strip().splitlines()
        assert ranks[rank].returncode == 1, stderr[-2000:]
        assert "Traceback" not in stderr and lines[-1].startswith("error: ") and str(bad) in lines[-1], (step, stderr[-2000:])
    assert f"rank 1 failed while loading the images of step {step}" in outputs[0]
    print(f"failure at step {step}: every rank ended {time.monotonic() - started:.1f} s after training started")


@pytest.mark.slow  # 30 to 50 s on two shared cores (two process start-ups)
def test_a_bad_image_at_step_1_stops_both_ranks_naming_it(tmp_path):
    """Step 1 is the one that used to stall: DistributedDataParallel's second forward waits for
    the other rank (it rebuilds its buckets), while the failed rank waited in the loss exchange."""
    _fails_on_every_rank(tmp_path, 1)


@pytest.mark.slow
@pytest.mark.parametrize("step", [0, 2, "random"])
def test_a_bad_image_at_any_step_stops_both_ranks_naming_it(tmp_path, step):
    _fails_on_every_rank(tmp_path, random.randrange(3, 6) if step == "random" else step)


def test_a_loader_workers_error_is_one_line_naming_the_file(tmp_path):
    """With --workers, the error comes back from a worker process with its traceback inside its
    message; what the ranks exchange and print is its own line."""
    bad = _data(tmp_path / "data", 0)
    batches = iter(step_loader(ImageFolder(tmp_path / "data", 64, SEED), BATCH, 0, 1, workers=1, rank=1, world=2))
    with pytest.raises(DataError) as caught:
        next(batches)
    message, line = str(caught.value), str(worker_error(caught.value))
    del batches, caught  # the traceback's frames hold the loader in a cycle: its worker is shut down
    gc.collect()  # here, not when the test process exits (where xdist's shutdown interrupted its join)
    assert "Traceback" in message  # what DataLoader hands back
    assert line.startswith(f"cannot read image {bad} (") and "\n" not in line and "Traceback" not in line, line
