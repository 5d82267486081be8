"""`python -m kubeletpy.controllers --kubeconfig PATH`: node IPAM + node lifecycle, standalone."""

import sys

from .cli import main

sys.exit(main("kubeletpy.controllers", scheduler=False, controllers=True))
