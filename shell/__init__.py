"""The SCST-style admin shell (installed as tcmu_scst.shell)."""
