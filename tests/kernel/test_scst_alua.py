"""scst.conf's DEVICE_GROUP / TARGET_GROUP applied to the real LIO (issue 16).

One vdisk behind two loopback targets, each target in its own target group: the
initiator's REPORT TARGET PORT GROUPS (``sg_rtpg``) shows the configured ids and
states, the kernel answers NOT READY (04/0B) on the standby path, and a re-apply of the
file with the states swapped is seen by a second ``sg_rtpg`` and by the reads. The
fixture's empty apply at the end removes the groups and then the backstores.

dm-multipath over the two paths (the kernel's multipath target, loaded by ``dmsetup``
with the failover table multipathd builds: one priority group per path, the active
one first) keeps an fio verify job free of I/O errors while ``config apply`` swaps
the states twice: the standby path's NOT READY fails it in dm, which moves to the
other group; the test reinstates the failed path as multipathd's checker would. The
same with multipath-tools itself (udevd and multipathd in the guest): its checker
shows the standby path as "ghost" and follows the swaps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tcmu_scst import cli
from tcmu_scst.kernel.configfs import Configfs
from tcmu_scst.kernel.fabrics import LoopbackTpg
from tcmu_scst.scst import conf
from tcmu_scst.scst.apply import apply_config
from tcmu_scst.scst.mapping import derived_naa
from tests.kernel.test_scst_apply import daemon, devices, setup  # noqa: F401 (fixtures)
from tests.kernel.test_vdisk_alua import _read, _run

pytestmark = pytest.mark.kernel

WEST = derived_naa("loopback", "west", "Default")
EAST = derived_naa("loopback", "east", "Default")


def alua_conf(tmp_path: Path, west: str, east: str) -> str:
    return devices(tmp_path) + (
        "TARGET_DRIVER scst_local {\n"
        " TARGET west {\n  LUN 0 d0\n }\n"
        " TARGET east {\n  LUN 0 d0\n }\n"
        "}\n"
        "DEVICE_GROUP dg {\n DEVICE d0\n"
        f" TARGET_GROUP tw {{\n  group_id 10\n  state {west}\n  preferred\n  TARGET west\n }}\n"
        f" TARGET_GROUP te {{\n  group_id 20\n  state {east}\n  TARGET east\n }}\n"
        "}\n"
    )


def rtpg(sg: str) -> dict[int, str]:
    """Target port group id -> the state sg_rtpg prints for it."""
    report = _run("sg_rtpg", "-d", sg)
    assert report.returncode == 0, report.stdout + report.stderr
    groups = {}
    for block in report.stdout.lower().split("target port group id")[1:]:
        gid = re.search(r":\s*0x([0-9a-f]+)", block)
        state = re.search(r"asymmetric access state\s*:\s*0x[0-9a-f]+\s*\(([^)]+)\)", block)
        assert gid and state, report.stdout
        groups[int(gid.group(1), 16)] = state.group(1)
    return groups


def test_device_group_states_reach_the_initiator_and_follow_a_reapply(
    setup: tuple[Configfs, Path, Path],  # noqa: F811 (the imported fixture)
) -> None:
    cfs, state, tmp_path = setup
    apply_config(cfs, conf.parse(alua_conf(tmp_path, "active", "standby"), "a.conf"), state)
    west = LoopbackTpg(cfs, WEST).wait_for_lun(0, need_block=False).sg
    east = LoopbackTpg(cfs, EAST).wait_for_lun(0, need_block=False).sg
    assert west is not None and east is not None

    assert rtpg(west) == {10: "active/optimized", 20: "standby"}
    assert _read(west).returncode == 0
    standby = _read(east)
    assert standby.returncode != 0
    assert "not ready" in (standby.stdout + standby.stderr).lower()

    result = apply_config(
        cfs, conf.parse(alua_conf(tmp_path, "standby", "active"), "b.conf"), state
    )
    assert [s.description for s in result.steps] == [
        "ALUA group te of d0: active",
        "ALUA group tw of d0: standby, preferred",
    ]
    assert rtpg(east) == {10: "standby", 20: "active/optimized"}
    assert _read(east).returncode == 0
    assert _read(west).returncode != 0


def _dm(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DM_DISABLE_UDEV": "1"}  # no udev in the guest: make nodes here
    return subprocess.run(["dmsetup", *argv], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def _devnum(block: str) -> str:
    return Path(f"/sys/block/{os.path.basename(block)}/dev").read_text().strip()


def _dm_node(name: str) -> str:
    for entry in Path("/sys/block").iterdir():
        dm_name = entry / "dm" / "name"
        if dm_name.exists() and dm_name.read_text().strip() == name:
            return f"/dev/{entry.name}"
    raise AssertionError(f"no dm device {name}")


def _path_states(name: str) -> dict[str, str]:
    """major:minor -> A (active) or F (failed), from the multipath target's status."""
    status = _dm("status", name)
    assert status.returncode == 0, status.stderr
    words = status.stdout.split()
    return {w: words[i + 1] for i, w in enumerate(words) if re.fullmatch(r"\d+:\d+", w)}


def test_dm_multipath_fio_verify_survives_state_swaps(
    setup: tuple[Configfs, Path, Path],  # noqa: F811 (the imported fixture)
    modprobe: Callable[..., None],
) -> None:
    cfs, state, tmp_path = setup
    apply_config(cfs, conf.parse(alua_conf(tmp_path, "active", "standby"), "a.conf"), state)
    west_block = LoopbackTpg(cfs, WEST).wait_for_lun(0).block
    east_block = LoopbackTpg(cfs, EAST).wait_for_lun(0).block
    assert west_block is not None and east_block is not None
    west, east = _devnum(west_block), _devnum(east_block)
    sectors = Path(f"/sys/block/{os.path.basename(west_block)}/size").read_text().strip()
    os.makedirs("/dev/mapper", exist_ok=True)  # libdevmapper puts its nodes there
    modprobe("dm_multipath")
    modprobe("dm_round_robin")
    table = (f"0 {sectors} multipath 0 0 2 1 round-robin 0 1 1 {west} 1000 "
             f"round-robin 0 1 1 {east} 1000")  # fmt: skip
    made = _dm("create", "alua_mp", "--table", table)
    assert made.returncode == 0, made.stderr
    try:
        node = _dm_node("alua_mp")
        fio = subprocess.Popen(
            ["fio", "--name=verify", f"--filename={node}", "--rw=randwrite", "--bs=4k",
             "--size=8M", "--direct=1", "--ioengine=psync", "--verify=crc32c",
             "--verify_backlog=16", "--verify_fatal=1", "--time_based", "--runtime=40"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        time.sleep(5)  # let it write and verify through the active path first
        flips = (("standby", "active", west), ("active", "standby", east))
        for west_state, east_state, fails in flips:
            text = alua_conf(tmp_path, west_state, east_state)
            apply_config(cfs, conf.parse(text, "swap.conf"), state)
            time.sleep(5)  # I/O meets the new standby path, dm fails it over
            assert fio.poll() is None, "fio ended before the swap was exercised"
            assert _path_states("alua_mp")[fails] == "F"
            reinstate = _dm("message", "alua_mp", "0", f"reinstate_path {fails}")
            assert reinstate.returncode == 0, reinstate.stderr
        output, _ = fio.communicate(timeout=300)
        assert fio.returncode == 0, output
        assert "err= 0" in output, output
    finally:
        _dm("remove", "--retry", "alua_mp")


MULTIPATH_CONF = """\
defaults {
    user_friendly_names no
    find_multipaths no
    polling_interval 1
    no_path_retry 30
}
"""


def _mpath(*argv: str) -> subprocess.CompletedProcess[str]:
    # The lab guest chroots into its root; systemd's tools ignore requests there unless told.
    env = {**os.environ, "SYSTEMD_IGNORE_CHROOT": "1"}
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=120)


def _checker_states(want: dict[str, str]) -> dict[str, str]:
    """Wait (bounded) until multipathd's path checker shows ``want`` (dev -> state)."""
    seen: dict[str, str] = {}
    for _ in range(120):
        shown = _mpath("multipathd", "show", "paths", "raw", "format", "%d %T")
        seen = dict(line.split(None, 1) for line in shown.stdout.splitlines() if " " in line)
        if all(seen.get(dev) == state for dev, state in want.items()):
            return seen
        time.sleep(0.5)
    return seen


def test_multipathd_follows_the_states_and_fio_verify_survives(
    setup: tuple[Configfs, Path, Path],  # noqa: F811 (the imported fixture)
    modprobe: Callable[..., None],
) -> None:
    """multipath-tools (udevd + multipathd in the guest) over the two paths: its TUR
    checker shows the standby path as "ghost" (NOT READY 04/0B), follows a swap made by
    config apply and one made by the shell, and reinstates the path that became
    active; fio verify keeps going.
    The priorities are multipath's const ones: the alua prioritizer finds no target
    port group in VPD 83h (see README, ALUA)."""
    cfs, state, tmp_path = setup
    apply_config(cfs, conf.parse(alua_conf(tmp_path, "active", "standby"), "a.conf"), state)
    west_block = LoopbackTpg(cfs, WEST).wait_for_lun(0).block
    east_block = LoopbackTpg(cfs, EAST).wait_for_lun(0).block
    assert west_block is not None and east_block is not None
    west, east = os.path.basename(west_block), os.path.basename(east_block)
    for module in ("dm_multipath", "dm_service_time"):
        modprobe(module)
    os.makedirs("/dev/mapper", exist_ok=True)
    Path("/etc/multipath.conf").write_text(MULTIPATH_CONF)
    assert _mpath("/lib/systemd/systemd-udevd", "--daemon").returncode == 0
    daemon_proc: subprocess.Popen[str] | None = None
    try:
        _mpath("udevadm", "trigger", "--action=add")
        _mpath("udevadm", "settle", "--timeout=60")
        env = {**os.environ, "SYSTEMD_IGNORE_CHROOT": "1"}
        daemon_proc = subprocess.Popen(
            ["multipathd", "-d", "-s"], env=env, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        states = _checker_states({west: "ready", east: "ghost"})
        assert states.get(west) == "ready" and states.get(east) == "ghost", states
        listing = _mpath("multipath", "-ll").stdout
        assert "active ready" in listing and "active ghost" in listing, listing
        wwid = listing.split()[0]
        fio = subprocess.Popen(
            ["fio", "--name=verify", f"--filename={_dm_node(wwid)}", "--rw=randwrite",
             "--bs=4k", "--size=8M", "--direct=1", "--ioengine=psync", "--verify=crc32c",
             "--verify_backlog=16", "--verify_fatal=1", "--time_based", "--runtime=45"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        # First swap by config apply, the second by the admin shell, whose model
        # starts from what was applied (its running.conf and a copy of the state).
        text = alua_conf(tmp_path, "standby", "active")
        apply_config(cfs, conf.parse(text, "swap.conf"), state)
        want = {west: "ghost", east: "ready"}
        states = _checker_states(want)
        assert all(states.get(d) == s for d, s in want.items()), states
        assert fio.poll() is None, "fio ended before the swap was exercised"
        shell_dir = tmp_path / "shell-state"
        shell_dir.mkdir()
        shutil.copy(state, shell_dir / "lio-state.json")
        (shell_dir / "running.conf").write_text(text)
        tgs = "/device_groups/dg/target_groups"
        for command in (f"{tgs}/tw state active", f"{tgs}/te state standby"):
            assert cli.main(["shell", "--state-dir", str(shell_dir), command]) == 0, command
        want = {west: "ready", east: "ghost"}
        states = _checker_states(want)
        assert all(states.get(d) == s for d, s in want.items()), states
        assert fio.poll() is None, "fio ended before the shell's swap was exercised"
        output, _ = fio.communicate(timeout=300)
        assert fio.returncode == 0, output
        assert "err= 0" in output, output
    finally:
        if daemon_proc is not None:
            daemon_proc.terminate()
            daemon_proc.wait(timeout=60)
        _mpath("multipath", "-F")
        _mpath("udevadm", "control", "--exit")
