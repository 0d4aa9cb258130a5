"""Data: the embedded digits, TFDS/image-folder/latent sources, and the Grain pipeline.

`make_source(data_config, split)` gives a random-access source of preprocessed examples;
`make_iterator(data_config, ...)` gives this host's checkpointable iterator of batches.
"""

from jaxdiff.data import digits
from jaxdiff.data.digits import load_digits
from jaxdiff.data.pipeline import make_dataset, make_iterator, steps_per_epoch
from jaxdiff.data.sources import SOURCE_NAMES, make_source

__all__ = [
    "SOURCE_NAMES",
    "digits",
    "load_digits",
    "make_dataset",
    "make_iterator",
    "make_source",
    "steps_per_epoch",
]
