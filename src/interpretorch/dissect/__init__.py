"""Network Dissection (Bau et al. 2017): label each unit of a layer with the concept its top activations segment.

``dissect(model, "probe_dir", ["layer"])`` over a Broden-format dataset (``BrodenDataset``; make a synthetic one
with ``make_probe``); ``write_tally`` / ``write_summary`` / ``write_layer_report`` write NetDissect-Lite's
tally.csv, a JSON summary and an HTML page. Statistics stream, checkpoint, resume and reduce under torchrun.
``dissect_rotated`` dissects a layer's representation rotated by ``Q^alpha`` (the paper's rotation experiment);
``write_series_report`` / ``write_compare_report`` draw dissections along alpha or training steps, and across runs.
"""
from interpretorch.dissect.broden import BrodenDataset, BrodenError, read_broden
from interpretorch.dissect.probe import make_probe
from interpretorch.dissect.report import write_compare_report, write_layer_report, write_series_report
from interpretorch.dissect.rotation import dissect_rotated, random_rotation, rotate_layers, rotation_power
from interpretorch.dissect.run import Dissection, LayerDissection, dissect, write_summary, write_tally

__all__ = ["BrodenDataset", "BrodenError", "read_broden", "make_probe", "dissect", "Dissection",
           "LayerDissection", "write_summary", "write_tally", "write_layer_report", "write_series_report",
           "write_compare_report", "dissect_rotated", "random_rotation", "rotate_layers", "rotation_power"]

