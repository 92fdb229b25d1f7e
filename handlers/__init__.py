"""SCST device handlers: vdisk, vcdrom, pass-through, perf (installed as tcmu_scst.handlers)."""
