"""python -m experiments.hang_schedules --scale=smoke|cpu|full --out=DIR"""

import sys

from experiments import common
from experiments.hang_schedules import STUDY

sys.exit(common.main(STUDY))
