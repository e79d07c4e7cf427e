import sys

from gan3d.cli import main

sys.exit(main())
