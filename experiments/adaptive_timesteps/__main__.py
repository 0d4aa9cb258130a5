"""python -m experiments.adaptive_timesteps --scale=smoke|cpu|full --out=DIR"""

import sys

from experiments import common
from experiments.adaptive_timesteps import STUDY

sys.exit(common.main(STUDY))
