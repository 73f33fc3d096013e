"""`python -m ecg_ray ...`: the `ecg-ray` command where its script is not on PATH (a KubeRay job's image)."""

import sys

from ecg_ray.commands.main import main

sys.exit(main())
