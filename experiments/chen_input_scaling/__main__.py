"""python -m experiments.chen_input_scaling --scale=smoke|cpu|full --out=DIR"""

import sys

from experiments import common
from experiments.chen_input_scaling import STUDY

sys.exit(common.main(STUDY))
