"""``python -m equiseg.cli``: the ``equiseg`` command."""

import sys

from equiseg.cli import main

sys.exit(main())
