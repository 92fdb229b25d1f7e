"""vcdrom parameters: the 0.9.6 proc forms, modern attributes and the dev_config string."""

from __future__ import annotations

import pytest

from tcmu_scst.errors import ConfigError, HandlerError
from tcmu_scst.handlers.vcdrom_params import (
    VcdromParams,
    parse_attributes,
    parse_dev_config,
    parse_proc_command,
    proc_read_header,
    proc_read_line,
    to_attributes,
    to_dev_config,
    to_proc_open,
)
from tcmu_scst.scst.devconfig import encode_dev_config
from tcmu_scst.scst.model import Device


def test_proc_open_with_and_without_a_path() -> None:
    cmd = parse_proc_command("open cd1 /images/a.iso")
    assert (cmd.action, cmd.name, cmd.filename) == ("open", "cd1", "/images/a.iso")
    assert cmd.params().filename == "/images/a.iso"
    empty = parse_proc_command("open cd2")
    assert empty.filename == "" and empty.params().filename == ""


def test_proc_change_and_close() -> None:
    assert parse_proc_command("change cd1 /b.iso").filename == "/b.iso"
    assert parse_proc_command("change cd1").filename == ""
    assert parse_proc_command("close cd1") == parse_proc_command("close  cd1 ")
    assert parse_proc_command("close cd1").action == "close"


@pytest.mark.parametrize("line,message", [
    ("", "unknown action"),
    ("resync_size cd1", "unknown action"),
    ("open", "wrong number of arguments"),
    ("close cd1 /x.iso", "wrong number of arguments"),
    ("change cd1 /a /b", "wrong number of arguments"),
    ("open a_name_longer_than_16", "too long"),
])
def test_proc_syntax_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_proc_command(line)


def test_proc_relative_path_is_refused() -> None:
    with pytest.raises(HandlerError, match="not absolute"):
        parse_proc_command("open cd1 images/a.iso")


def test_to_proc_open_round_trips_and_refuses_what_it_cannot_say() -> None:
    for params in (VcdromParams("cd1", "/a.iso"), VcdromParams("cd1")):
        line = to_proc_open(params)
        assert parse_proc_command(line).params() == params
    with pytest.raises(ConfigError, match="usn"):
        to_proc_open(VcdromParams("cd1", usn="abc"))


def test_proc_read_format() -> None:
    assert proc_read_header() == "Name              Size(MB)    File name"
    assert proc_read_line(VcdromParams("cd1", "/a.iso"), 700 << 20) == (
        "cd1               700         /a.iso"
    )
    assert proc_read_line(VcdromParams("cd2"), 0).endswith("none")


def test_modern_attributes() -> None:
    params = parse_attributes("cd1", {"filename": "/a.iso", "tst": "1", "usn": "u1"})
    assert params == VcdromParams("cd1", "/a.iso", usn="u1")
    assert to_attributes(params) == ("vcdrom", {"filename": "/a.iso", "usn": "u1"})
    assert to_attributes(VcdromParams("cd2")) == ("vcdrom", {})
    with pytest.raises(ConfigError, match="unknown attribute"):
        parse_attributes("cd1", {"blocksize": "2048"})
    with pytest.raises(ConfigError, match="not supported"):
        parse_attributes("cd1", {"read_only": "0"})


@pytest.mark.parametrize("params", [
    VcdromParams("cd1", "/images/a.iso"),
    VcdromParams("cd1"),
    VcdromParams("weird", "/x/a,b;c=d:e%f g.iso", t10_dev_id="t10", usn="u", setup_id=7),
])
def test_dev_config_round_trip_without_commas_or_colons(params: VcdromParams) -> None:
    text = to_dev_config(params)
    assert text.startswith("vcdrom/n=")
    assert "," not in text and ":" not in text and " " not in text
    assert parse_dev_config(text) == params


def test_the_scst_layer_writes_the_handlers_own_encoding() -> None:
    device = Device("cd1", "vcdrom", {"filename": "/img/a b.iso"})
    text = encode_dev_config(device)
    assert parse_dev_config(text) == VcdromParams("cd1", "/img/a b.iso")
    assert to_dev_config(VcdromParams("cd1", "/img/a b.iso")) == text


@pytest.mark.parametrize("text,message", [
    ("vdisk/n=x", "does not start with vcdrom/"),
    ("vcdrom/n=x;filename=/a%2", "bad escape"),
    ("vcdrom/filename=/a.iso", "name"),
    ("vcdrom/n=x;bs=2048", "unknown item"),
    ("vcdrom/n=x;ro", "unknown item"),
    ("vcdrom/n=x;sid=z", "not a number"),
])
def test_dev_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dev_config(text)


def test_dev_config_length_limit() -> None:
    with pytest.raises(ConfigError, match="255"):
        to_dev_config(VcdromParams("cd1", "/" + "a" * 260))


def test_identities_are_derived_like_vdisk() -> None:
    params = VcdromParams("cd1")
    assert params.effective_usn == f"{params.dev_id_num:x}"
    assert params.effective_t10_dev_id.endswith("-cd1")
    assert VcdromParams("cd1", setup_id=1).dev_id_num == (1 << 32) | params.dev_id_num


def test_same_drive_ignores_only_the_medium() -> None:
    assert VcdromParams("cd1", "/a").same_drive(VcdromParams("cd1", "/b"))
    assert not VcdromParams("cd1").same_drive(VcdromParams("cd2"))
    assert not VcdromParams("cd1").same_drive(VcdromParams("cd1", usn="x"))
