import sys

from hostwire.cli import main

sys.exit(main())
