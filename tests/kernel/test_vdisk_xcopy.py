"""EXTENDED COPY between two of OUR vdisks through LIO (tcm_loop, the kernel's sd/sg):

* the kernel passes EXTENDED COPY and RECEIVE COPY RESULTS of a TCMU device to us;
* ``sg_xcopy`` (sg3-utils) copies between two LUNs of one loopback target: the
  destination file holds the source's bytes, and no data crossed the ring (the
  destination served a handful of commands, not the 8 MiB);
* a copy to a LUN exported through another target (a different set of ports and
  initiators) is refused: COPY ABORTED / UNREACHABLE COPY TARGET, nothing written.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from tcmu_scst.handlers import vdisk_params
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg

from .tcmu_rig import Served, serve

MiB = 1 << 20
SIZE = 16 * MiB


def _vdisk(stack: ExitStack, name: str) -> tuple[Served, Path]:
    backing = Path(f"/run/xcopy-{name}.img")
    with open(backing, "wb") as handle:
        handle.truncate(SIZE)
    stack.callback(lambda: backing.unlink(missing_ok=True))
    dev_config = vdisk_params.to_dev_config(
        vdisk_params.VdiskParams(name=name, filename=str(backing)))
    return serve(stack, dev_config, SIZE, export=False), backing


def _sg(tpg: LoopbackTpg, lun: int) -> str:
    """/dev/sgN of a loopback LUN once the midlayer scanned it."""
    node = tpg.wait_for_lun(lun, need_block=False).sg
    assert node is not None, f"no sg node for {tpg.hctl(lun)}"
    return node


def _export(stack: ExitStack, *served: Served) -> tuple[LoopbackTpg, list[str]]:
    tpg = LoopbackTpg.create(Configfs())
    stack.callback(tpg.delete)
    for lun, dev in enumerate(served):
        tpg.add_lun(lun, dev.backstore)
    return tpg, [_sg(tpg, lun) for lun in range(len(served))]


def _parameter_list(src: Served, dst: Served, blocks: int) -> bytes:
    """EXTENDED COPY(LID1): two identification CSCD descriptors by NAA, one segment."""
    def cscd(served: Served) -> bytes:
        naa: bytes = served.handler.device.copy_designator()  # type: ignore[attr-defined]
        designator = bytes((0x01, 0x03, 0, len(naa))) + naa
        return bytes((0xE4, 0, 0, 0)) + designator.ljust(24, b"\0") + (512).to_bytes(4, "big")

    targets = cscd(src) + cscd(dst)
    segment = (bytes((0x02, 0, 0, 24, 0, 0, 0, 1, 0, 0)) + blocks.to_bytes(2, "big")
               + bytes(16))
    header = (bytes((0, 3 << 3)) + len(targets).to_bytes(2, "big") + bytes(4)
              + len(segment).to_bytes(4, "big") + bytes(4))
    return header + targets + segment


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _clear_unit_attentions(sg: str) -> None:
    """Take the unit attentions an initiator sees first (REPORTED LUNS DATA HAS CHANGED
    once the second LUN appears; POWER ON/RESET) with TEST UNIT READY, as sd does."""
    for _ in range(4):
        if _run("sg_turs", sg).returncode == 0:
            return
    raise AssertionError(f"{sg}: TEST UNIT READY keeps failing")


def test_sg_xcopy_between_two_luns_copies_inside_the_daemon(lio_stack: ExitStack) -> None:
    (src, src_file), (dst, dst_file) = _vdisk(lio_stack, "xsrc"), _vdisk(lio_stack, "xdst")
    pattern = os.urandom(8 * MiB)
    with open(src_file, "r+b") as handle:
        handle.write(pattern)
    _tpg, (sg_src, sg_dst) = _export(lio_stack, src, dst)
    for sg in (sg_src, sg_dst):
        _clear_unit_attentions(sg)
    opcodes = _run("sg_opcodes", sg_src)
    assert "Extended copy" in opcodes.stdout or "EXTENDED COPY" in opcodes.stdout.upper()
    before = dst.runner.stats.commands
    copied = _run("sg_xcopy", f"if={sg_src}", f"of={sg_dst}", "bs=512",
                  f"count={8 * MiB // 512}", "skip=0", "seek=2048")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    with open(dst_file, "rb") as handle:
        handle.seek(2048 * 512)
        assert handle.read(8 * MiB) == pattern
    # The 8 MiB did not cross the ring of the destination: only a few commands did
    # (INQUIRY, READ CAPACITY... from sg_xcopy's probing), never 16 Ki blocks of WRITE.
    assert dst.runner.stats.commands - before < 50


def test_copy_to_a_lun_exported_elsewhere_is_refused(lio_stack: ExitStack) -> None:
    (src, src_file), (other, other_file) = _vdisk(lio_stack, "xa"), _vdisk(lio_stack, "xb")
    with open(src_file, "r+b") as handle:
        handle.write(b"\x77" * MiB)
    _tpg_a, (sg_a,) = _export(lio_stack, src)
    _tpg_b, (sg_b,) = _export(lio_stack, other)  # another target: other ports
    refused = _run("sg_xcopy", f"if={sg_a}", f"of={sg_b}", "bs=512", "count=2048")
    assert refused.returncode != 0
    assert "copy aborted" in (refused.stdout + refused.stderr).lower()
    # The same copy by hand, to see the whole sense: COPY ABORTED / UNREACHABLE COPY TARGET.
    plist = _parameter_list(src, other, blocks=2048)
    params = Path("/run/xcopy-params.bin")
    params.write_bytes(plist)
    lio_stack.callback(lambda: params.unlink(missing_ok=True))
    cdb = ["83"] + ["00"] * 9 + [f"{b:02x}" for b in len(plist).to_bytes(4, "big")] + ["00"] * 2
    raw = _run("sg_raw", "-v", "-s", str(len(plist)), "-i", str(params), sg_a, *cdb)
    text = (raw.stdout + raw.stderr).lower()
    assert "copy aborted" in text and "unreachable copy target" in text, text
    with open(other_file, "rb") as handle:
        assert handle.read(MiB) == bytes(MiB)
