"""Pass-through parameters: 0.9.6 /proc lines, modern attributes, dev_config."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handlers.passthrough_params import (
    PassthroughParams,
    ProcLun,
    parse_attributes,
    parse_dev_config,
    parse_proc_assign,
    parse_proc_lun,
    to_attributes,
    to_dev_config,
    to_proc_assign,
)


def test_proc_assign_round_trip() -> None:
    params = parse_proc_assign("assign 1:0:1:0 dev_disk")
    assert (params.handler, params.hctl) == ("dev_disk", "1:0:1:0")
    assert to_proc_assign(params) == "assign 1:0:1:0 dev_disk"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("assign 1:0:1 dev_disk", "not a SCSI address"),
        ("assign 1:0:1:0 vdisk", "'vdisk' is not a pass-through handler"),
        ("assign 1:0:1:0", "expected 'assign H:C:I:L HANDLER_NAME'"),
    ],
)
def test_proc_assign_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_proc_assign(line)


def test_proc_assign_cannot_say_new_options() -> None:
    with pytest.raises(ConfigError, match="cannot express serialized, timeout"):
        to_proc_assign(PassthroughParams("dev_tape", "2:0:0:0", serialized=False, timeout=5))


def test_proc_lun_lines() -> None:
    assert parse_proc_lun("add 1:0:1:0 0") == ProcLun("add", "1:0:1:0", 0, False)
    assert parse_proc_lun("add 1:0:1:0 3 READ_ONLY") == ProcLun("add", "1:0:1:0", 3, True)
    assert parse_proc_lun("del 1:0:1:0") == ProcLun("del", "1:0:1:0")
    with pytest.raises(ConfigError, match="only READ_ONLY"):
        parse_proc_lun("add 1:0:1:0 3 RO")
    with pytest.raises(ConfigError, match="LUN 'x' is not a number"):
        parse_proc_lun("add 1:0:1:0 x")


def test_type_defaults() -> None:
    tape = PassthroughParams("dev_tape", "0:0:0:0")
    disk = PassthroughParams("dev_disk", "0:0:0:0")
    assert tape.effective_serialized and not disk.effective_serialized
    assert PassthroughParams("dev_changer", "0:0:0:0").effective_serialized
    assert PassthroughParams("dev_disk", "0:0:0:0", serialized=True).effective_serialized
    assert tape.effective_timeout > disk.effective_timeout == 60
    assert PassthroughParams("dev_disk", "0:0:0:0", timeout=7).effective_timeout == 7


def test_attributes_round_trip() -> None:
    params = parse_attributes(
        "dev_disk", "1:0:1:0",
        {"serialized": "1", "timeout": "30", "vendor_in": "c0 0xC1", "vendor_out": "c2"},
    )
    assert params.serialized is True and params.timeout == 30
    assert params.vendor_in == {0xC0, 0xC1} and params.vendor_out == {0xC2}
    handler, attrs = to_attributes(params)
    assert handler == "dev_disk"
    assert attrs == {"serialized": "1", "timeout": "30", "vendor_in": "c0 c1", "vendor_out": "c2"}
    assert parse_attributes(handler, "1:0:1:0", attrs) == params
    assert to_attributes(PassthroughParams("dev_tape", "1:0:0:0")) == ("dev_tape", {})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"serialized": "yes"}, "not a boolean"),
        ({"timeout": "soon"}, "not a number"),
        ({"vendor_in": "zz"}, "not a hex opcode"),
        ({"vendor_in": "c0", "vendor_out": "c0"}, "both vendor_in and vendor_out"),
        ({"blocksize": "512"}, "unknown attribute"),
    ],
)
def test_attribute_errors(attrs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_attributes("dev_disk", "1:0:1:0", attrs)


def test_dev_config_round_trip_has_no_comma_or_colon() -> None:
    params = PassthroughParams("dev_changer", "12:0:3:1", serialized=False, timeout=90,
                               vendor_in=frozenset({0xC0, 0xD1}), vendor_out=frozenset({0xC5}))
    text = to_dev_config(params)
    assert text == "dev_changer/hctl=12%3A0%3A3%3A1;ser=0;to=90;vin=c0+d1;vout=c5"
    assert "," not in text and ":" not in text
    assert parse_dev_config(text) == params


def test_dev_config_reads_the_bare_address_and_raw_colons() -> None:
    bare = "dev_disk/hctl=" + quote("1:0:1:0", safe="/._-")  # no options at all
    assert parse_dev_config(bare) == PassthroughParams("dev_disk", "1:0:1:0")
    assert parse_dev_config("dev_raid/hctl=3:0:0:0").hctl == "3:0:0:0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vdisk/n=x", "does not start with dev_disk/ or dev_tape/"),
        ("dev_disk/ser=1", "hctl= is missing|\\(hctl=\\) is missing"),
        ("dev_disk/hctl=1%3A0%3A0%3A0;speed=9", "unknown item 'speed=9'"),
        ("dev_disk/hctl=1%3A0%3A0%3A0;ser=2", "ser='2' is not 0 or 1"),
        ("dev_disk/hctl=nonsense", "not a SCSI address"),
    ],
)
def test_dev_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dev_config(text)


def test_validate_rejects_out_of_range_values() -> None:
    with pytest.raises(HandlerError, match="timeout"):
        PassthroughParams("dev_disk", "0:0:0:0", timeout=10**9).validate()
    with pytest.raises(HandlerError, match="not an opcode"):
        PassthroughParams("dev_disk", "0:0:0:0", vendor_in=frozenset({300})).validate()
