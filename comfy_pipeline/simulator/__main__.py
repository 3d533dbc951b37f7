"""`python -m comfy_pipeline.simulator ...`: the same as `comfy-pipeline simulator ...`."""

import sys

from comfy_pipeline.simulator.cli import main

sys.exit(main())
