"""Entry script of a shim process: `python3 -S -E cri/shim/main.py`.

Run as a script, not `-m`, so no site-packages (grpc, pyroute2…) are on the
path and nothing but the stdlib and cri.shim can be imported by accident.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cri.shim.server import main  # noqa: E402

main()
