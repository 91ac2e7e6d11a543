"""``python -m hrnet_edge_runtime``: the same as ``hrnet-edge-run``."""
import sys

from hrnet_edge_runtime.cli import main

sys.exit(main())
