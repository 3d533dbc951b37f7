"""`python -m comfy_pipeline.cli ...`: the same as the `comfy-pipeline` script."""

import sys

from comfy_pipeline.cli import main

sys.exit(main())
