import sys

from busted.cli import main

sys.exit(main())
