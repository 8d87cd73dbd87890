import sys

from hfrel.cli import main

sys.exit(main())
