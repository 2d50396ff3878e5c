import os
import signal
import time
from pathlib import Path

import yaml

from tests.trainer.torchrun import launch
from trainer.distributed import fsdp_requested, micro_chunks


def test_microbatches_give_every_process_the_same_number_of_backward_passes():
    batch = list(range(17))
    for world in (1, 2, 3):
        shares = [micro_chunks(batch, rank=r, world=world, micro=4) for r in range(world)]
        assert len({len(s) for s in shares}) == 1
        real = sorted(g for s in shares for chunk, w in s if w for g in chunk)
        assert real == batch  # every group once, fillers weigh nothing
    # a last batch smaller than the world: the empty share runs one zero-weight filler
    assert micro_chunks([7], rank=1, world=2, micro=4) == [([7], 0.0)]


def test_sharding_is_asked_for_by_the_flag_or_by_accelerate_launch_with_an_fsdp_config(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert not fsdp_requested(False) and fsdp_requested(True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets from docs/accelerate_fsdp.yaml
    assert fsdp_requested(False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert not fsdp_requested(False)


def test_the_documented_fsdp_config_is_an_fsdp2_config_that_wraps_transformer_blocks():
    config = yaml.safe_load((Path(__file__).parents[2] / "docs" / "accelerate_fsdp.yaml").read_text())
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    assert config["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_ranks_die_with_their_launcher(tmp_path):
    # torchrun puts each rank in a session of its own: a kill aimed at the launcher's group does not reach them
    launcher = launch(["tests.trainer.waiting_rank", str(tmp_path)])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("rank*.pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    ranks = [int(p.read_text()) for p in tmp_path.glob("rank*.pid")]
    assert len(ranks) == 2, launcher.stderr.read() if launcher.poll() is not None else "ranks did not start"
    launcher.kill()  # SIGKILL: no chance to stop its ranks itself
    launcher.wait()  # not communicate(): the ranks hold its pipes open while they live
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in ranks if _alive(pid)]
    for pid in alive:  # the test's own leftovers
        os.kill(pid, signal.SIGKILL)
    launcher.communicate()
    assert not alive


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for its (new) parent to reap it
