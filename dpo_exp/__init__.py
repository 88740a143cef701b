"""dpo_exp: config-driven preference fine-tuning experiments (DPO, IPO, KTO, ORPO, ...)."""

import os

# torch's OpenMP threads wait passively between parallel regions instead of spinning. On a CPU
# that another process also uses, spinning threads hold cores the others need and every region
# waits for a descheduled thread: a small training loop on 2 threads beside another job ran ~9x
# slower spinning than passive, and slower than 1 thread (README "Speed"). Read when torch's
# OpenMP runtime starts, so it is set here, before any module imports torch; a value in the
# environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
