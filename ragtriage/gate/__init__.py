"""The release gate: adversarial test sets (``synth``), labelled datasets, ``ragtriage ci``,
``ragtriage calibrate`` and the pytest plugin, all on the same evaluation pipeline as production."""

from ragtriage.errors import DatasetError
from ragtriage.gate.calibration import Calibration, load_calibration
from ragtriage.gate.datasets import Item, load_dataset, write_dataset
from ragtriage.gate.synth import synthesize

__all__ = ["Calibration", "DatasetError", "Item", "load_calibration", "load_dataset", "synthesize", "write_dataset"]
