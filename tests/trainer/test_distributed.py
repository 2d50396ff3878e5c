from trainer.distributed import micro_chunks


def test_microbatches_give_every_process_the_same_number_of_backward_passes():
    batch = list(range(17))
    for world in (1, 2, 3):
        shares = [micro_chunks(batch, rank=r, world=world, micro=4) for r in range(world)]
        assert len({len(s) for s in shares}) == 1
        real = sorted(g for s in shares for chunk, w in s if w for g in chunk)
        assert real == batch  # every group once, fillers weigh nothing
    # a last batch smaller than the world: the empty share runs one zero-weight filler
    assert micro_chunks([7], rank=1, world=2, micro=4) == [([7], 0.0)]
