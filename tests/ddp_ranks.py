"""Run a function on several torch.distributed ranks (gloo, CPU processes) and collect what each returns:
the harness of the DDP tests, for the family's losses and for a new loss's own test.

:func:`on_ranks` spawns the ranks, each with a process group, calls ``work(rank, world, *args)`` and returns
the ranks' results in rank order. :func:`loss_on_ranks` serves the common case: losses built by
``make_losses`` (with ``ddp=True``), each rank holding its share of the batch, give their values and input
gradients per rank, for comparison with one process on the whole batch (one spawn for all of them).
"""

import datetime
import os
import socket
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def share(rank: int, batch: int, world: int = WORLD) -> slice:
    """The samples of the batch that ``rank`` holds."""
    return slice(rank * batch // world, (rank + 1) * batch // world)


def _entry(rank, world, port, work, args, out_path):
    torch.set_num_threads(1)
    # a collective that waits for a rank that never comes fails after 30 s instead of hanging the test
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    try:
        results = work(rank, world, *args)
        path = out_path.format(rank=rank)
        torch.save(results, path + ".part")
        os.replace(path + ".part", path)  # complete or absent, whatever happens to the process next
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_ranks(work, *args, world: int = WORLD) -> list:
    """``work(rank, world, *args)`` on ``world`` gloo ranks (``work`` and ``args`` picklable); the results."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "rank{rank}.pt")
        paths = [out_path.format(rank=r) for r in range(world)]
        # Gloo on the CPU sometimes aborts a worker in its teardown, after its work is done ("terminate called
        # without an active exception", SIGABRT; TEARDOWN_ABORT in tests/test_bundles.py): a SIGABRT is accepted
        # when every rank has written its results, and the run is repeated when one has not.
        for _ in range(3):
            for path in paths:
                if os.path.exists(path):
                    os.remove(path)
            context = mp.spawn(_entry, args=(world, _free_port(), work, args, out_path), nprocs=world, join=False)
            deadline = time.monotonic() + 240
            try:
                while not context.join(timeout=5):
                    if time.monotonic() > deadline:
                        for process in context.processes:
                            process.kill()
                        pytest.fail("the distributed workers did not finish")
            except mp.ProcessExitedException as error:
                if error.signal_name != "SIGABRT":
                    raise
            if all(os.path.exists(path) for path in paths):
                return [torch.load(path) for path in paths]
    pytest.fail("a distributed worker aborted before writing its results in three runs")


def _loss_work(rank, world, make_losses, logits, target, mask):
    part = share(rank, logits.shape[0], world)
    results = []
    for make_loss in make_losses:
        x = logits[part].clone().requires_grad_()
        value = make_loss()(x, target[part], mask=None if mask is None else mask[part])
        value.backward()
        results.append((value.detach(), x.grad))
    return results


def loss_on_ranks(make_losses, logits, target, mask=None, world: int = WORLD) -> list:
    """Per rank, the (value, input gradient) of each ``make_loss()`` of ``make_losses`` on the rank's share."""
    return on_ranks(_loss_work, list(make_losses), logits, target, mask, world=world)
