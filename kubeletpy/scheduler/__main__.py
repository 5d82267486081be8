"""`python -m kubeletpy.scheduler --kubeconfig PATH`: the scheduler as its own process."""

import sys

from kubeletpy.controllers.cli import main

sys.exit(main("kubeletpy.scheduler", scheduler=True, controllers=False))
