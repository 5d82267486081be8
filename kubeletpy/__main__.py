import sys

from kubeletpy.cli import main

sys.exit(main())
