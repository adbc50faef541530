"""edgecls: train, compress, quantize and benchmark image classifiers for edge devices.

The package root imports nothing heavy: `edgecls.runtime` must stay usable on a
device that has no TensorFlow, and the CLI loads TensorFlow only in the commands
that need it.
"""

__version__ = "0.2.0"
