"""A failure's meaningful line, in plain words, and which failures would repeat."""

from __future__ import annotations

from app.jobs.failures import error_summary, will_repeat

TRACEBACK = """Traceback (most recent call last):
  File "/x/trainer/best_of_n.py", line 88, in main
    scores = score(batch)
             ^^^^^^^^^^^^
  File "/x/torch/nn/functional.py", line 2264, in embedding
    return torch.embedding(weight, input, padding_idx)
IndexError: index out of range in self
"""


def test_a_traceback_says_its_exception_not_its_frames():
    assert error_summary(TRACEBACK) == "index out of range in self (IndexError)"
    chained = (
        TRACEBACK
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + ('Traceback (most recent call last):\n  File "a.py", line 1\ntorch.OutOfMemoryError: CUDA out of memory\n')
    )
    assert error_summary(chained) == "CUDA out of memory (OutOfMemoryError)"


def test_a_trainer_user_error_line_wins_and_plain_text_keeps_its_first_line():
    assert error_summary("loading\nerror: data line 3: no prompt\n") == "data line 3: no prompt"
    assert error_summary("\n  too little data: 3 pairs, need 10\nmore\n") == "too little data: 3 pairs, need 10"
    assert error_summary("") == ""
    assert len(error_summary("x" * 1000)) == 300


def test_only_a_process_killed_by_a_signal_may_succeed_when_tried_again():
    assert will_repeat(2) and will_repeat(1) and will_repeat(0)
    assert not will_repeat(-9)
