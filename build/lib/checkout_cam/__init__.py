"""checkout_cam: a real-time camera checkout assistant.

Data flow, one module per room: sources (frames) -> frame_queue -> worker
(inference) -> review (policy) -> render / sinks.
"""

import os
import sys
from pathlib import Path

__version__ = "0.1.0"

# The capture thread, the inference worker and the window share two cores. OpenMP's default
# active spin-wait makes torch's threads burn the core the capture thread needs, and latency
# collapses when anything else runs: ResNet-18 batch 1 on 2 threads with a busy core measured
# 80-110 ms (default) vs 65-67 ms (PASSIVE), and 47 vs 37 ms on a quiet machine. It must be set
# before torch loads OpenMP, hence here; a user's own setting wins.
# `finetune` is the exception: one process doing nothing but torch work, where spinning pays
# (seconds per 128 px training step, same run: 2.48 ACTIVE vs 2.85 PASSIVE).
_ONLY_TORCH_COMMANDS = {"finetune"}


def _cli_command(argv: list[str]) -> str | None:
    if not argv or Path(argv[0]).name not in ("checkout-cam", "-m"):
        return None
    return next((a for a in argv[1:] if not a.startswith("-")), None)


os.environ.setdefault("OMP_WAIT_POLICY",
                      "ACTIVE" if _cli_command(sys.argv) in _ONLY_TORCH_COMMANDS else "PASSIVE")
