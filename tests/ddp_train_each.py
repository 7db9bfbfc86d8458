"""Run under torchrun: ``genmodels train`` with each argument list of the JSON file ``argv[1]``, one after
another, in the same processes; exits with the first non-zero status.

One torchrun launch then covers every family (its worker start-up, a few seconds, paid once). The process
group stays up between the runs: ``train`` leaves it at the end of each (``distributed.shutdown``), which
is held here until the last run, because a default group joined again in the same processes would meet the
first one's keys in torchrun's store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from genmodels.cli import main
from genmodels.training import distributed

leave = distributed.shutdown
distributed.shutdown = lambda: None
try:
    for args in json.loads(Path(sys.argv[1]).read_text()):
        code = main(args)
        if code != 0:
            print(f"ddp_train_each: genmodels {' '.join(args[:2])} exited with {code}", file=sys.stderr)
            sys.exit(code)
finally:
    leave()
