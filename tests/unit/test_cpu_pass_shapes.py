"""The shapes a CPU forward pass runs at: each slice is cut to its longest row rounded up to
CPU_LENGTH_STEP, so a worker meets a bounded set of sequence lengths (torch keeps kernels per
length; see CPU_LENGTH_STEP)."""

import numpy as np
import pytest

from workers.engines.torch_engine import CPU_LENGTH_STEP, trim_padding


def padded(lengths, seqlen, side):
    ids = np.zeros((len(lengths), seqlen), dtype=np.int64)
    for row, n in enumerate(lengths):
        if side == "right":
            ids[row, :n] = np.arange(1, n + 1)
        else:
            ids[row, seqlen - n:] = np.arange(1, n + 1)
    return ids


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_slice_keeps_its_longest_row_rounded_up_to_the_step_and_every_real_token(side):
    ids = padded([3, 13, 9], 64, side)
    kept = trim_padding(ids, np.array([3, 13, 9]), side)
    assert kept.shape == (3, 16)
    assert (kept != 0).sum() == 3 + 13 + 9
    assert (kept[1, :13] if side == "right" else kept[1, -13:]).tolist() == list(range(1, 14))


def test_a_slice_never_grows_past_the_columns_its_batch_has():
    assert trim_padding(padded([61], 61, "right"), np.array([61]), "right").shape == (1, 61)


def test_a_length_already_on_the_step_is_not_padded_further():
    assert trim_padding(padded([32, 5], 64, "right"), np.array([32, 5]), "right").shape[1] == 32


def test_every_length_up_to_a_512_bucket_runs_at_one_of_512_over_step_widths():
    widths = {trim_padding(padded([n], 512, "right"), np.array([n]), "right").shape[1] for n in range(1, 513)}
    assert len(widths) == 512 // CPU_LENGTH_STEP
    assert all(w % CPU_LENGTH_STEP == 0 for w in widths)
