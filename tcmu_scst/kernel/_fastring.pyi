"""Types of the compiled path (tcmu_scst/kernel/_fastring.c)."""

from typing_extensions import Buffer

def serve_plain(
    map: Buffer, cmdr_off: int, cmdr_size: int, pos: int, head: int, fd: int,
    block_size: int, blocks: int, max_blocks: int, writes_ok: bool, fua_ok: bool,
    rwf_flags: int, max_read_bytes: int, reject10: bytes, reject16: bytes,
    histogram: Buffer, /,
) -> tuple[int, int, int]: ...
