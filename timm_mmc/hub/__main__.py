"""``python -m timm_mmc.hub``: see :mod:`timm_mmc.hub.cli`."""
import sys

from .cli import main

sys.exit(main())
