"""python -m experiments.min_snr --scale=smoke|cpu|full --out=DIR"""

import sys

from experiments import common
from experiments.min_snr import STUDY

sys.exit(common.main(STUDY))
