"""`python -m idgbr …`: the `idgbr` command without its console script."""
import sys

from .cli import main

sys.exit(main())
