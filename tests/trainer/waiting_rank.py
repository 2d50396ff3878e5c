"""`torchrun ... -m tests.trainer.waiting_rank DIR`: a rank that joins the process group, writes its pid into DIR
and waits (for a test that kills its launcher)."""

import os
import sys
import time
from pathlib import Path

from trainer.distributed import dist_info

if __name__ == "__main__":
    rank, _ = dist_info()
    (Path(sys.argv[1]) / f"rank{rank}.pid").write_text(str(os.getpid()))
    time.sleep(120)
