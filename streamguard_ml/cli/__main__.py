"""``python -m streamguard_ml.cli`` is ``streamguard-ml``."""

import sys

from . import main

sys.exit(main())
