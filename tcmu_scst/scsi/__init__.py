"""SCSI emulation: CDB parsing, sense data, SPC/SBC/MMC. Pure logic, no I/O."""
