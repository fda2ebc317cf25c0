"""``python -m pillow_diffcodec`` runs the ``diffcodec`` command line."""

import sys

from .cli import main

sys.exit(main())
