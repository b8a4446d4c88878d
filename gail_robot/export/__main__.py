"""``python -m gail_robot.export --worker REQUEST``: the fresh process of ``--verify``.

Kept out of ``__init__`` so that running it does not import this module twice.
"""

import sys

from gail_robot.errors import UserError
from gail_robot.export.verify import worker

if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    try:
        sys.exit(worker(sys.argv[2]))
    except UserError as exc:
        print(f"gail-robot export: error: {exc}", file=sys.stderr)
        sys.exit(2)
print(
    "usage: gail-robot export SOURCE --out FILE [--verify]  (this module is run by the CLI)", file=sys.stderr
)
sys.exit(2)
