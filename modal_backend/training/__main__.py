"""`python -m modal_backend.training`: see `cli`."""

import sys

from .cli import main

sys.exit(main())
