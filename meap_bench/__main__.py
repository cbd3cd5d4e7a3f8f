import sys

from meap_bench.cli import main

sys.exit(main())
