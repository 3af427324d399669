import sys

from predictor.rollout.cli import main

sys.exit(main())
