"""A training entry point that sleeps and writes nothing: for LocalTrainer's timeout and no-metrics paths."""

import os
import sys
import time

print("[slow] started", flush=True)
time.sleep(float(os.environ.get("SLOW_TRAINER_SECONDS", "60")))
sys.exit(0)
