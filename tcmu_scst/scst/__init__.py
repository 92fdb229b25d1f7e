"""The SCST management model (groups, names, LUNs), its mapping onto LIO, scst.conf."""
