"""tcmu-scst: SCST's handlers and management model on LIO through TCMU.

Data path, lowest layer first::

    kernel/ring  ->  command  ->  scsi (emulation)  ->  handlers  ->  backing store

``tcmu_scst.kernel`` touches the kernel ABI (UIO, ring, netlink, configfs);
``tcmu_scst.scsi`` is pure SCSI logic; ``tcmu_scst.scst`` is SCST's model and its
mapping onto LIO; ``tcmu_scst.service`` runs devices; ``tcmu_scst.lab`` boots the
real kernel in a microVM. Lower layers never import upper ones.
"""

__version__ = "0.1.0"
