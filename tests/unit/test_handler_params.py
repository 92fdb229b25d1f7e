"""Each handler parameter is declared once (kernel.handler_table: type, range, default)
and that declaration drives parsing, range checks and defaults in every codec, so the
config file, the shell and the 0.9.6 proc commands accept the same values with the
same messages."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tcmu_scst import cli
from tcmu_scst.errors import ConfigError, TcmuScstError
from tcmu_scst.handlers import passthrough_params, vcdrom_params, vdisk_params
from tcmu_scst.kernel import handler_table, parameters
from tcmu_scst.kernel.handler_table import BLOCKSIZE, HANDLERS, Kind
from tcmu_scst.kernel.parameters import Param, ParamType
from tcmu_scst.scst import devconfig
from tcmu_scst.scst.model import Device
from tcmu_scst.testing.fake_configfs import FakeConfigfs

from .test_shell_proc import fake, proc, shell

__all__ = ["fake"]  # the fixture, used by name

_PY_TYPES = {
    ParamType.BOOL: bool, ParamType.INT: int, ParamType.TEXT: str, ParamType.PATH: str,
    ParamType.OPCODES: str,
}  # fmt: skip


def test_every_parameter_of_every_handler_has_a_type_a_default_and_a_doc() -> None:
    for spec in HANDLERS:
        names = spec.parameter_names
        assert len(names) == len(set(names)), spec.name
        for param in spec.parameters:
            assert isinstance(param.type, ParamType), (spec.name, param)
            assert type(param.default) is _PY_TYPES[param.type], (spec.name, param)
            assert param.doc, (spec.name, param)
            if param.type is ParamType.TEXT:
                assert param.maximum is not None and len(param.default) <= param.maximum
            if param.choices:
                assert param.type is ParamType.INT and param.default in param.choices
            if param.minimum is not None and param.maximum is not None:
                assert param.minimum <= param.int_default() <= param.maximum, param
            assert spec.param(param.name) is param
        assert spec.param("no_such_parameter") is None


def test_a_name_means_one_declaration_across_a_kind() -> None:
    """The codecs key their parameters by name per kind: no two meanings for a name."""
    for kind in Kind:
        seen: dict[str, Param] = {}
        for spec in HANDLERS:
            if spec.kind is not kind:
                continue
            for param in spec.parameters:
                other = seen.setdefault(param.name, param)
                # pass-through handlers differ only in their defaults
                assert replace(other, default=param.default) == param, (spec.name, param)


def test_pass_through_defaults_are_the_tables_timeout_and_serialization() -> None:
    for spec in HANDLERS:
        if spec.kind is Kind.PASSTHROUGH:
            params = passthrough_params.PassthroughParams(spec.name, "1:0:0:0").validate()
            timeout, serialized = spec.param("timeout"), spec.param("serialized")
            assert timeout is not None and serialized is not None
            assert params.effective_timeout == timeout.default == spec.timeout > 0
            assert params.effective_serialized is serialized.default is spec.serialized
        elif spec.kind is Kind.PERF:
            assert (spec.timeout, spec.serialized, spec.parameters) == (0, False, ())
    assert handler_table.by_name("dev_tape") is not None
    assert passthrough_params.DEFAULT_TIMEOUTS["dev_tape"] == 14400


def test_vdisk_and_vcdrom_defaults_are_the_tables() -> None:
    vdisk = vdisk_params.VdiskParams(name="d")
    for name, param in vdisk_params.PARAMS.items():
        if name == "size":
            assert vdisk.size is None and vdisk.nullio_size == param.default
        elif name == "size_mb":
            assert param.default == vdisk.nullio_size >> 20
        else:
            assert getattr(vdisk, name) == param.default, name
    cd = vcdrom_params.VcdromParams(name="cd")
    for name, param in vcdrom_params.PARAMS.items():
        assert getattr(cd, name) == param.default, name
    # A device at the table's defaults writes no attribute but its file (scstadmin's
    # "key" attributes).
    for spec in HANDLERS:
        if spec.kind is Kind.VDISK:
            filename = "rbd:p/i" if spec.name == "vdisk_rbd" else "/f"
            attrs = {} if spec.name == "vdisk_nullio" else {"filename": filename}
            parsed = vdisk_params.parse_attributes(spec.name, "d", attrs)
            assert vdisk_params.to_attributes(parsed) == (spec.name, attrs)


def _config(handler: str, attrs: dict[str, str]) -> str | None:
    """What the config file's path (scst.devconfig) says of a device: None = accepted."""
    try:
        name = "1:0:0:0" if handler in handler_table.ASSIGNED_HANDLERS else "d"
        devconfig.encode_dev_config(Device(name, handler, attrs))
    except TcmuScstError as err:
        return str(err)
    return None


@pytest.mark.parametrize("spec", [h for h in HANDLERS if h.parameters], ids=lambda h: h.name)
def test_each_parameters_range_comes_from_the_table(spec: handler_table.HandlerSpec) -> None:
    """At the table's limit a value is taken; one past it is refused, naming the limit."""
    base = {} if spec.kind is not Kind.VDISK or spec.name == "vdisk_nullio" else (
        {"filename": "rbd:p/i" if spec.name == "vdisk_rbd" else "/f"}
    )  # fmt: skip
    checked = 0
    for param in spec.parameters:
        if param.type is ParamType.TEXT:
            assert param.maximum is not None
            good, bad = "x" * param.maximum, "x" * (param.maximum + 1)
            message = f"{param.name} {bad!r} must be at most {param.maximum} printable"
        elif param.type is ParamType.INT and param.maximum is not None:
            good, bad = str(param.maximum), str(param.maximum + 1)
            message = f"{param.name} {bad} s is out of range ({param.minimum}..{param.maximum}"
        elif param.type is ParamType.OPCODES:
            assert param.maximum is not None
            good, bad = f"{param.maximum:x}", f"{param.maximum + 1:x}"
            message = f"{bad!r} is not an opcode (00..{param.maximum:02x})"
        elif param.choices:
            good, bad = str(param.choices[-1]), str(param.choices[-1] * 2)
            message = f"block size {bad} is not one LIO exports"
        elif param.type is ParamType.BOOL:
            good, bad, message = "1", "2", f"{param.name}='2' is not a boolean; use 0 or 1"
        else:
            continue
        checked += 1
        assert _config(spec.name, {**base, param.name: good}) is None, param
        problem = _config(spec.name, {**base, param.name: bad})
        assert problem is not None and message in problem, (param, problem)
    assert checked


def test_the_block_sizes_taken_follow_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """No path keeps its own list: narrow the table and the file and proc forms follow."""
    narrow = replace(BLOCKSIZE, choices=(512, 4096))
    monkeypatch.setattr(handler_table, "BLOCKSIZE", narrow)
    message = "block size 1024 is not one LIO exports; use 512 or 4096"
    assert _config("vdisk_fileio", {"filename": "/f", "blocksize": "1024"}) == message
    with pytest.raises(TcmuScstError, match=f"^{message}$"):
        vdisk_params.parse_proc_open("open d /f 1024")
    assert vdisk_params.parse_proc_open("open d /f 4096").blocksize == 4096


def test_the_one_parser_by_type() -> None:
    flag = Param("f", ParamType.BOOL, False, "doc")
    number = Param("n", ParamType.INT, 0, "doc")
    ops = Param("o", ParamType.OPCODES, "", "doc", maximum=0xFF)
    assert parameters.parse(flag, "w", " 1 ") is True
    assert parameters.parse(number, "w", "0x10") == 16
    assert parameters.parse(ops, "w", "c0, 0xC1") == frozenset({0xC0, 0xC1})
    assert parameters.parse(Param("p", ParamType.PATH, "", "doc"), "w", "/a b") == "/a b"
    for param, value, message in (
        (flag, "yes", "w is not a boolean; use 0 or 1"),
        (number, "ten", "w is not a number"),
        (number, "-1", "w is negative"),
        (number, "\u0660", "w is not a number"),  # int() reads ARABIC-INDIC ZERO as 0
        (number, "1_000", "w is not a number"),
        (ops, "\u0661", "w: '\u0661' is not a hex opcode (e.g. c0)"),
        (ops, "zz", "w: 'zz' is not a hex opcode (e.g. c0)"),
        (ops, "100", "w: '100' is not an opcode (00..ff)"),
    ):
        with pytest.raises(ConfigError) as err:
            parameters.parse(param, "w", value)
        assert str(err.value) == message


def _candidates() -> list[int]:
    sizes = BLOCKSIZE.choices
    return sorted({sizes[0] // 2, *sizes, *(s + 1 for s in sizes), sizes[-1] * 2})


@pytest.mark.parametrize("block_size", _candidates())
def test_file_shell_and_proc_take_exactly_the_tables_block_sizes(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str], block_size: int
) -> None:
    image = tmp_path / "d0.img"
    image.write_bytes(bytes(1 << 16))
    path = tmp_path / "scst.conf"
    lines = ["HANDLER vdisk_fileio {", " DEVICE d0 {", f"  filename {image}",
             f"  blocksize {block_size}", " }", "}"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    runs = {
        "config": lambda: cli.main(["config", "check", str(path)]),
        "proc": lambda: proc(tmp_path, "/proc/scsi_tgt/vdisk/vdisk",
                             f"open d0 {image} {block_size}"),
        "shell": lambda: shell(tmp_path, "/vdisk", "open", "d1", str(image), str(block_size)),
    }  # fmt: skip
    statuses = {tool: run() for tool, run in runs.items()}
    taken = block_size in BLOCKSIZE.choices
    assert set(statuses.values()) == {0 if taken else 1}, statuses
    if taken:
        return
    why = f"block size {block_size} is not one LIO exports; use 512, 1024, 2048 or 4096"
    where = {"config": f"{path}:2: device d0: "}
    expected = [f"tcmu-scst {tool}: error: {where.get(tool, '')}{why}" for tool in runs]
    assert capsys.readouterr().err.splitlines()[-3:] == expected


def test_the_file_reads_a_devices_block_size_and_size_with_the_codecs_parser() -> None:
    """``config check`` read blocksize with int() (0x1000 refused, though the codec and
    the shell take it) and a NULLIO size with int() (a traceback for 'abc')."""
    disk = Device("d", "vdisk_fileio", {"filename": "/f", "blocksize": "0x1000"})
    assert devconfig.block_size_of(disk) == 4096 == vdisk_params.parse_proc_open(
        "open d /f 0x1000").blocksize  # fmt: skip
    with pytest.raises(ConfigError, match=r"^vdisk_fileio d: blocksize='big' is not a number$"):
        devconfig.block_size_of(Device("d", "vdisk_fileio", {"blocksize": "big"}))
    null = Device("d", "vdisk_nullio", {"size_mb": "2"})
    assert devconfig.size_of(null) == 2 << 20
    assert devconfig.size_of(Device("d", "vdisk_nullio")) == vdisk_params.PARAMS["size"].default
    with pytest.raises(ConfigError, match=r"vdisk_nullio d: size='abc' is not a number"):
        devconfig.size_of(Device("d", "vdisk_nullio", {"size": "abc"}))


@pytest.mark.parametrize(
    ("handler", "node", "why"),
    [
        ("vdisk_fileio", "vdisk", "vdisk 'd0': file path 'rel.img' is not absolute"),
        ("vcdrom", "vcdrom", "vcdrom 'd0': image path 'rel.img' is not absolute"),
    ],
)
def test_file_shell_and_proc_refuse_a_relative_path_with_the_codecs_message(
    tmp_path: Path, fake: FakeConfigfs, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, handler: str, node: str, why: str,
) -> None:
    """The file checked the files first ("backing file rel.img does not exist"); the
    shell and proc parse first. Now the codec speaks first everywhere."""
    monkeypatch.chdir(tmp_path)  # rel.img is absent here, and would be found if present
    path = tmp_path / "scst.conf"
    path.write_text(f"HANDLER {handler} {{\n DEVICE d0 {{\n  filename rel.img\n }}\n}}\n")
    statuses = [
        cli.main(["config", "check", str(path)]),
        proc(tmp_path, f"/proc/scsi_tgt/{node}/{node}", "open d0 rel.img"),
        shell(tmp_path, f"/{node}", "open", "d0", "rel.img"),
    ]
    assert statuses == [1, 1, 1]
    message = f"{why}; give a full path"
    assert capsys.readouterr().err.splitlines()[-3:] == [
        f"tcmu-scst config: error: {path}:2: {message}",
        f"tcmu-scst proc: error: {message}",
        f"tcmu-scst shell: error: {message}",
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [("timeout", "99999999"), ("timeout", "abc"), ("timeout", "-1"), ("vendor_out", "1ff"),
     ("vendor_in", "zz"), ("serialized", "yes")],
)  # fmt: skip
def test_an_absent_pass_through_devices_values_get_the_codecs_message(
    key: str, value: str
) -> None:
    """A device not plugged in is checked by the table (hotplug_rules), a present one by
    its codec: the same value gets the same message."""
    from tcmu_scst.errors import ErrorCollector
    from tcmu_scst.scst import hotplug_rules

    with pytest.raises(ConfigError) as present:
        passthrough_params.parse_attributes("dev_tape", "9:9:9:9", {key: value})
    collector = ErrorCollector()
    hotplug_rules._check_assigned_attributes(
        Device("9:9:9:9", "dev_tape", {key: value}), collector
    )
    assert [str(err) for err in collector.errors] == [str(present.value)]
    hotplug_rules._check_assigned_attributes(
        Device("9:9:9:9", "dev_tape", {key: "1" if key != "vendor_out" else "c0"}), collector
    )
    assert len(collector.errors) == 1  # a good value adds nothing
