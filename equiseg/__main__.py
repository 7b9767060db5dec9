"""``python -m equiseg`` (also what ``torchrun -m equiseg train ...`` runs)."""

import sys

from equiseg.cli import main

sys.exit(main())
