"""The vdisk parameter model: 0.9.6 proc form, modern attributes, dev_config, identities."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handlers.vdisk import (
    VdiskParams,
    block_device_config,
    crc32c_linux,
    parse_attributes,
    parse_dev_config,
    parse_proc_open,
    proc_read_header,
    proc_read_line,
    to_attributes,
    to_dev_config,
    to_proc_open,
)

# -- (a) 0.9.6 open command ----------------------------------------------------------------


def test_proc_open_defaults_to_fileio_512() -> None:
    p = parse_proc_open("open disk1 /vdisks/disk1")
    assert (p.name, p.filename, p.blocksize, p.handler_name) == (
        "disk1", "/vdisks/disk1", 512, "vdisk_fileio"
    )
    assert not (p.write_through or p.read_only or p.nullio or p.blockio)


def test_proc_open_block_size_and_every_flag() -> None:
    p = parse_proc_open(
        "open d2 /dev/sdb 4096 WRITE_THROUGH READ_ONLY NV_CACHE BLOCKIO REMOVABLE\n"
    )
    assert p.blocksize == 4096 and p.handler_name == "vdisk_blockio"
    assert p.write_through and p.read_only and p.nv_cache and p.blockio and p.removable
    assert p.vendor == "SCST_BIO"


def test_proc_open_hex_block_size_like_simple_strtoul() -> None:
    assert parse_proc_open("open d /f 0x800").blocksize == 2048


def test_proc_open_o_direct_kept_for_fileio_dropped_for_blockio() -> None:
    assert parse_proc_open("open d /f O_DIRECT").o_direct
    assert not parse_proc_open("open d /dev/sdb BLOCKIO O_DIRECT").o_direct


def test_proc_open_nullio_needs_no_path() -> None:
    p = parse_proc_open("open null1 NULLIO")
    assert p.nullio and p.filename == "" and p.handler_name == "vdisk_nullio"
    assert p.vendor == "SCST_FIO"
    assert parse_proc_open("open null2 /dev/null 4096 NULLIO").filename == "/dev/null"


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("open", ConfigError, "a device NAME is required"),
        ("open d /f 512 FAST", ConfigError, "unknown flag 'FAST'; known: WRITE_THROUGH"),
        ("open abcdefghijklmnopq /f", ConfigError, r"too long \(max 16 characters\)"),
        ("open d /f 5x2", ConfigError, "block size '5x2' is not a number"),
        ("open d", HandlerError, "a backing file name is required"),
        ("open d rel/path", HandlerError, "file path 'rel/path' is not absolute"),
        ("open d /f NULLIO BLOCKIO", HandlerError, "NULLIO and BLOCKIO exclude each other"),
        (
            "open d /f 1000",
            HandlerError,
            "block size 1000 is not one LIO exports; use 512, 1024, 2048 or 4096",
        ),
        ("open d /f 256", HandlerError, "block size 256 is not one LIO exports"),
        ("open d /f 8192", HandlerError, "block size 8192 is not one LIO exports"),
    ],
)
def test_proc_open_errors(line: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_proc_open(line)


def test_the_block_sizes_lio_exports_are_accepted_and_no_other() -> None:
    for bs in (512, 1024, 2048, 4096):
        assert VdiskParams(name="d", filename="/f", blocksize=bs).validate().blocksize == bs
    for bs in (8192, 65536, 1 << 30):  # the config file refused these; the shell took them
        with pytest.raises(HandlerError, match=f"block size {bs} is not one LIO exports"):
            VdiskParams(name="d", filename="/f", blocksize=bs).validate()


def test_to_proc_open_refuses_what_0_9_6_cannot_say() -> None:
    p = VdiskParams(name="d", filename="/f", thin_provisioned=True, rotational=False)
    with pytest.raises(ConfigError, match="cannot express rotational=0, thin_provisioned"):
        to_proc_open(p)
    with pytest.raises(ConfigError, match="a file name with blanks"):
        to_proc_open(VdiskParams(name="d", filename="/my disk"))
    with pytest.raises(ConfigError, match="over 16 characters"):
        to_proc_open(VdiskParams(name="d" * 17, filename="/f"))


def test_proc_read_line_format() -> None:
    p = parse_proc_open("open disk1 /vdisks/disk1 4096 WRITE_THROUGH READ_ONLY REMOVABLE")
    assert proc_read_header() == (
        "Name              Size(MB)    Block size  Options         File name"
    )
    line = proc_read_line(p, 10 << 20)
    assert line == "disk1             10          4096        WT RO RM        /vdisks/disk1"
    assert proc_read_line(parse_proc_open("open n NULLIO"), 3 << 40).split()[:4] == [
        "n", "3145728", "512", "NIO"
    ]


# -- (b) modern attributes ---------------------------------------------------------------


def test_attributes_of_each_handler() -> None:
    p = parse_attributes(
        "vdisk_fileio", "disk1",
        {"filename": "/d1", "blocksize": "4096", "write_through": "1", "thin_provisioned": "1",
         "rotational": "0", "usn": "abc123", "t10_dev_id": "my-disk"},
    )
    assert (p.blocksize, p.write_through, p.thin_provisioned, p.rotational) == (
        4096, True, True, False
    )
    assert p.effective_usn == "abc123" and p.effective_t10_dev_id == "my-disk"
    assert parse_attributes("vdisk_blockio", "b", {"filename": "/dev/sdb"}).blockio
    n = parse_attributes("vdisk_nullio", "n", {"size_mb": "64"})
    assert n.nullio and n.nullio_size == 64 << 20
    assert parse_attributes("vdisk_nullio", "n", {"size": str(64 << 20), "size_mb": "64"}).size


@pytest.mark.parametrize(
    ("handler", "attrs", "message"),
    [
        ("vdisk_foo", {}, "unknown vdisk handler 'vdisk_foo'"),
        ("vdisk_blockio", {"filename": "/d", "o_direct": "1"}, "unknown attribute for vdisk_b"),
        ("vdisk_nullio", {"filename": "/d"}, "unknown attribute for vdisk_nullio"),
        ("vdisk_fileio", {"filename": "/d", "read_only": "yes"}, "not a boolean; use 0 or 1"),
        ("vdisk_fileio", {"filename": "/d", "blocksize": "big"}, "is not a number"),
        ("vdisk_fileio", {"filename": "/d", "async": "1"}, "not supported by tcmu-scst"),
        ("vdisk_fileio", {"filename": "/d", "dummy": "1"}, "unknown attribute for vdisk_fileio"),
        ("vdisk_nullio", {"size": "1048576", "size_mb": "2"}, "disagrees with the other size"),
    ],
)
def test_attribute_errors(handler: str, attrs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_attributes(handler, "d", attrs)


def test_default_valued_unsupported_attributes_are_accepted() -> None:
    p = parse_attributes("vdisk_fileio", "d", {"filename": "/d", "tst": "1", "numa_node_id": "0"})
    assert p.filename == "/d"


def test_to_attributes_lists_only_key_values() -> None:
    p = VdiskParams(name="d", filename="/d", blocksize=4096, removable=True)
    assert to_attributes(p) == (
        "vdisk_fileio", {"filename": "/d", "blocksize": "4096", "removable": "1"}
    )


# -- (c) dev_config -------------------------------------------------------------------------


def test_dev_config_escapes_what_the_kernel_or_we_would_split() -> None:
    p = VdiskParams(name="d", filename="/srv/a,b;c=d:e%f g\tä", thin_provisioned=True)
    text = to_dev_config(p)
    assert text == "vdisk/n=d;tp;f=/srv/a%2Cb%3Bc%3Dd%3Ae%25f%20g%09%C3%A4"
    assert "," not in text and ":" not in text
    assert parse_dev_config(text) == p


def test_dev_config_too_long_is_refused() -> None:
    p = VdiskParams(name="d", filename="/" + "x" * 250)
    with pytest.raises(ConfigError, match=r"dev_config is \d+ characters, over the kernel's 255"):
        to_dev_config(p)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user/n=d", "does not start with vdisk/"),
        ("vdisk/n=d;zz", "unknown item 'zz'; known: bio, bs"),
        ("vdisk/n=d;q=1;f=/f", "unknown item 'q=1'"),
        ("vdisk/n;f=/f", "unknown item 'n'"),  # a key written as a flag
        ("vdisk/n=d;wt=1", "unknown item 'wt=1'"),  # a flag given a value
        ("vdisk/n=d;bs=x;f=/f", "bs='x' is not a number"),
        ("vdisk/n=d;f=/a%2", "bad escape '%2'"),
        ("vdisk/n=d;f=/a%zz", "bad escape '%zz'"),
        ("vdisk/bs=512;f=/f", r"the device name \(n=\) is missing"),
    ],
)
def test_dev_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dev_config(text)


# -- identities -------------------------------------------------------------------------------


def test_crc32c_is_linux_raw_castagnoli() -> None:
    # The standard CRC-32C check value is the raw CRC with ~0 seed, inverted.
    assert crc32c_linux(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xE3069283
    assert crc32c_linux(b"") == 0


def test_identities_are_derived_from_the_name_like_scst() -> None:
    p = VdiskParams(name="disk1", filename="/f")
    num = crc32c_linux(b"disk1\0")
    assert p.dev_id_num == num
    assert p.effective_usn == f"{num:x}"
    assert p.effective_t10_dev_id == f"{num:x}-disk1"
    with_setup = VdiskParams(name="disk1", filename="/f", setup_id=0x1234)
    assert with_setup.effective_usn == f"1234{num:08x}"
    assert VdiskParams(name="disk2", filename="/f").effective_usn != p.effective_usn
    long_name = VdiskParams(name="a-rather-long-device-name", filename="/f")
    assert len(long_name.effective_t10_dev_id) == 25


def test_naa_id_is_stable_type_6_with_lio_oui() -> None:
    p = VdiskParams(name="disk1", filename="/f")
    naa = p.naa_id
    assert len(naa) == 16 and naa[0] >> 4 == 6
    assert (int.from_bytes(naa, "big") >> 100) & 0xFFFFFF == 0x001405
    assert naa == VdiskParams(name="disk1", filename="/other").naa_id
    assert naa != VdiskParams(name="disk1", filename="/f", setup_id=1).naa_id


def test_block_device_config_carries_everything() -> None:
    p = VdiskParams(
        name="a-long-device-name-x", filename="/f", blocksize=4096, write_through=True,
        read_only=True, removable=True, rotational=False, thin_provisioned=True, nv_cache=True,
    )
    c = block_device_config(p)
    assert (c.block_size, c.write_back, c.read_only, c.removable, c.rotational) == (
        4096, False, True, True, False
    )
    assert c.thin_provisioned and c.nv_cache and c.vendor == "SCST_FIO"
    assert c.product == "a-long-device-na" and c.serial == p.effective_usn
    assert c.t10_dev_id == p.effective_t10_dev_id and c.naa_id == p.naa_id


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (VdiskParams(name="", filename="/f"), "non-empty printable"),
        (VdiskParams(name="a b", filename="/f"), "without blanks|w/o blanks"),
        (VdiskParams(name="a/b", filename="/f"), "no '/'"),
        (VdiskParams(name="d", filename="/f", size=4096), "size applies to NULLIO only"),
        (VdiskParams(name="d", nullio=True, size=100), "below one block"),
        (VdiskParams(name="d", filename="/f", usn="x" * 21), "usn 'x+' must be at most 20"),
        (VdiskParams(name="d", filename="/f", t10_dev_id="a b"), "t10_dev_id 'a b' must be"),
        (VdiskParams(name="d", filename="/f", setup_id=1 << 32), "does not fit in 32 bits"),
    ],
)
def test_validation_errors(params: VdiskParams, message: str) -> None:
    with pytest.raises(HandlerError, match=message):
        params.validate()


# -- round trips --------------------------------------------------------------------------------

names = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/"),
    min_size=1, max_size=16,
)
paths = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=60
).map(lambda s: "/" + s)
id_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
block_sizes = st.sampled_from([512, 1024, 2048, 4096])


@st.composite
def any_params(draw: st.DrawFn) -> VdiskParams:
    kind = draw(st.sampled_from(["fileio", "blockio", "nullio"]))
    nullio = kind == "nullio"
    return VdiskParams(
        name=draw(names),
        filename="" if nullio else draw(paths),
        blocksize=draw(block_sizes),
        write_through=draw(st.booleans()),
        read_only=draw(st.booleans()),
        o_direct=kind == "fileio" and draw(st.booleans()),
        nv_cache=draw(st.booleans()),
        nullio=nullio,
        blockio=kind == "blockio",
        removable=draw(st.booleans()),
        rotational=draw(st.booleans()),
        thin_provisioned=draw(st.booleans()),
        t10_dev_id=draw(id_text),
        usn=draw(id_text),
        size=draw(st.none() | st.integers(8192, 1 << 50)) if nullio else None,
        setup_id=draw(st.integers(0, (1 << 32) - 1)),
    )


@settings(max_examples=200, deadline=None)
@given(any_params())
def test_dev_config_round_trip(params: VdiskParams) -> None:
    try:
        text = to_dev_config(params)
    except ConfigError:
        assert len(text_of(params)) > 255
        return
    assert "," not in text and ":" not in text and "\n" not in text and len(text) <= 255
    assert parse_dev_config(text) == params


def text_of(params: VdiskParams) -> str:
    """A dev_config without the length check, to confirm why it was refused."""
    from tcmu_scst.kernel import devconfig

    saved = devconfig.DEV_CONFIG_MAX
    devconfig.DEV_CONFIG_MAX = 1 << 20  # type: ignore[misc]
    try:
        return to_dev_config(params)
    finally:
        devconfig.DEV_CONFIG_MAX = saved  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(any_params())
def test_attribute_round_trip(params: VdiskParams) -> None:
    if params.nullio and (params.write_through or params.nv_cache or params.thin_provisioned):
        with pytest.raises(ConfigError, match="vdisk_nullio has no"):
            to_attributes(params)
        return
    handler, attrs = to_attributes(params)
    assert parse_attributes(handler, params.name, attrs, setup_id=params.setup_id) == params


@settings(max_examples=200, deadline=None)
@given(any_params())
def test_proc_round_trip(params: VdiskParams) -> None:
    # Keep only what the 0.9.6 form can say.
    params.rotational, params.thin_provisioned = True, False
    params.t10_dev_id = params.usn = ""
    params.size = None
    if any(c.isspace() for c in params.filename):
        with pytest.raises(ConfigError):
            to_proc_open(params)
        return
    assert parse_proc_open(to_proc_open(params), setup_id=params.setup_id) == params


def test_proc_commands_open_close_resync() -> None:
    from tcmu_scst.handlers.vdisk import ProcCommand, parse_proc_command

    opened = parse_proc_command("open d1 /f 4096 NV_CACHE")
    assert opened.action == "open" and opened.params is not None and opened.params.nv_cache
    assert parse_proc_command("close d1\n") == ProcCommand("close", "d1")
    assert parse_proc_command("resync_size d1") == ProcCommand("resync_size", "d1")
    with pytest.raises(ConfigError, match="give exactly one device NAME: close NAME"):
        parse_proc_command("close")
    with pytest.raises(ConfigError, match=r"unknown action .change.; use open\|close\|resync"):
        parse_proc_command("change d1 /f")
