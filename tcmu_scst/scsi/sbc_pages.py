"""The VPD pages (B0h, B1h, B2h) and mode pages (01h, 08h, 0Ah, 1Ch) of an SBC device.

Built from :class:`~tcmu_scst.scsi.block.BlockDeviceConfig` on every request, so
what they report is always what the emulation enforces.
"""

from __future__ import annotations

from tcmu_scst.scsi.block import BlockDeviceConfig

VPD_BLOCK_LIMITS = 0xB0
VPD_BLOCK_DEVICE_CHARACTERISTICS = 0xB1
VPD_LOGICAL_BLOCK_PROVISIONING = 0xB2

MODE_RW_ERROR_RECOVERY = 0x01
MODE_CACHING = 0x08
MODE_CONTROL = 0x0A
MODE_INFORMATIONAL_EXCEPTIONS = 0x1C

WCE = 0x04  # caching page byte 2


def max_compare_write_blocks(config: BlockDeviceConfig) -> int:
    """MAXIMUM COMPARE AND WRITE LENGTH: the configured value, within the 1-byte field."""
    return max(0, min(config.max_compare_write_blocks, 255, config.max_transfer_blocks))


def vpd_block_limits(config: BlockDeviceConfig) -> bytes:
    """Block Limits (SBC-4 6.6.4): the limits the command code really enforces."""
    page = bytearray(0x3C)
    thin = config.thin_provisioned
    page[0] = 0x00  # WSNZ=0: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is accepted
    page[1] = max_compare_write_blocks(config)
    page[2:4] = (1 << config.lbppbe).to_bytes(2, "big")  # OPTIMAL TRANSFER LENGTH GRANULARITY
    page[4:8] = config.max_transfer_blocks.to_bytes(4, "big")
    if thin:
        page[16:20] = config.max_unmap_blocks.to_bytes(4, "big")
        page[20:24] = config.max_unmap_descriptors.to_bytes(4, "big")
        page[24:28] = (1 << config.lbppbe).to_bytes(4, "big")  # OPTIMAL UNMAP GRANULARITY
    page[32:40] = config.max_write_same_blocks.to_bytes(8, "big")
    return bytes(page)


def vpd_block_device_characteristics(config: BlockDeviceConfig) -> bytes:
    """Block Device Characteristics: MEDIUM ROTATION RATE 1 = non-rotating, 0 = not reported."""
    page = bytearray(0x3C)
    if not config.rotational:
        page[0:2] = (1).to_bytes(2, "big")
    return bytes(page)


def vpd_logical_block_provisioning(config: BlockDeviceConfig) -> bytes:
    """Logical Block Provisioning: LBPU, LBPWS, LBPWS10 and LBPRZ=1 when thin."""
    if not config.thin_provisioned:
        return bytes(4)
    # byte 5: LBPU 80h | LBPWS 40h | LBPWS10 20h | LBPRZ 001b (bits 4-2) ; byte 6:
    # PROVISIONING TYPE 010b (thin). A discarded range reads back as zeros.
    return bytes((0x00, 0xE4, 0x02, 0x00))


def rw_error_recovery_page() -> bytes:
    """Read-Write Error Recovery: AWRE and ARRE set; nothing changeable."""
    page = bytearray(12)
    page[0:3] = bytes((MODE_RW_ERROR_RECOVERY, 0x0A, 0xC0))
    return bytes(page)


def caching_page(write_cache: bool) -> bytes:
    page = bytearray(20)
    page[0:2] = bytes((MODE_CACHING, 0x12))
    if write_cache:
        page[2] = WCE
    return bytes(page)


def caching_page_changeable(config: BlockDeviceConfig) -> bytes:
    """WCE is changeable, except with NV_CACHE, which always reports write-through."""
    page = bytearray(20)
    page[0:2] = bytes((MODE_CACHING, 0x12))
    if not config.nv_cache:
        page[2] = WCE
    return bytes(page)


def control_page() -> bytes:
    """Control mode page (SPC-4 7.5.8).

    TST 000b: LIO keeps one task set for all I_T nexuses. GLTSD=1: no log
    parameters are saved. QUEUE ALGORITHM MODIFIER 1: commands run on several
    threads and may be reordered. TAS=1: LIO reports aborted commands with TASK
    ABORTED to the other nexuses (emulate_tas defaults to 1).
    """
    page = bytearray(12)
    page[0:6] = bytes((MODE_CONTROL, 0x0A, 0x02, 0x10, 0x00, 0x40))
    return bytes(page)


def informational_exceptions_page() -> bytes:
    """Informational Exceptions Control: DEXCPT=1 (none reported), MRIE 0."""
    page = bytearray(12)
    page[0:3] = bytes((MODE_INFORMATIONAL_EXCEPTIONS, 0x0A, 0x08))
    return bytes(page)


def unchangeable(page: bytes) -> bytes:
    """The changeable-values form of a page with nothing changeable."""
    return bytes(page[:2]) + bytes(len(page) - 2)
