"""The ground floor every layer stands on: typed errors, atomic files and digests, figures.

Nothing here imports another edgecls module, nor a machine-learning framework: the device
runtime uses ``errors`` and ``fileio`` too, and ``plots`` draws only where matplotlib is installed.
"""
