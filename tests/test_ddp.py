"""DDP on two CPU processes: gradients averaged, teachers identical, no hang without pseudo-boxes."""

import os
import socket
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_processes_stay_in_step_when_one_rank_has_no_pseudo_boxes(tiny_shapes, tmp_path):
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_worker.py"), tiny_shapes, str(tmp_path), "--no-boxes-on-rank1"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["unsup_skipped"] for r in ranks] == [False, True]
    for name in ranks[0]["grads"]:  # each rank's own gradients differ; DDP's averages do not
        torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name])
    for part in ("student", "teacher"):
        for name, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][name]), (part, name)
    assert any(v.abs().sum() > 0 for v in ranks[0]["grads"].values())


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tiny_shapes, tmp_path):
    run = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_worker.py"), tiny_shapes, str(tmp_path), "--nan-on-rank1"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "rank1.error").read_text().startswith("Non-finite loss at iteration 1: loss_cls = nan.")
    assert (tmp_path / "rank0.error").read_text().startswith("Non-finite loss at iteration 1: on another rank.")
    assert not (tmp_path / "rank0.pt").exists()


def test_two_machines_started_separately_keep_identical_teachers(tiny_shapes, tmp_path):
    """As on a cluster: one command per machine (--num-machines 2 --machine-rank R, a shared
    tcp dist_url), one process each; after 4 steps with EMA the teachers are bit-identical."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    machines = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "ddp_worker.py"), tiny_shapes, str(tmp_path), "--max-iter", "4",
             "--num-machines", "2", "--machine-rank", str(rank), "--dist-url", f"tcp://127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["ema_steps"] for r in ranks] == [4, 4]
    assert not any(r["unsup_skipped"] for r in ranks)
    moved = 0
    for name, value in ranks[0]["teacher"].items():
        assert torch.equal(value, ranks[1]["teacher"][name]), name
        moved += not torch.equal(value, ranks[0]["student"][name])
    assert moved > 0  # the EMA teacher is not simply the student
