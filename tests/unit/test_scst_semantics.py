"""Semantic checks before anything is applied: names (RFC 3720/3722), iSCSI parameter
values (RFC 7143), CHAP secret lengths, kernel limits; the shell applies the same rules."""

from __future__ import annotations

import pytest

from tcmu_scst.errors import ConfigError
from tcmu_scst.scst import conf
from tcmu_scst.scst.catalogue import iscsi_param_error
from tcmu_scst.scst.model import ScstConfig, iscsi_name_error
from tcmu_scst.shell import edits

DEV = "HANDLER vdisk_nullio {\n DEVICE d\n}\n"  # lines 1-3


def tgt(name: str, body: str) -> str:
    return f"TARGET_DRIVER iscsi {{\n TARGET {name} {{\n{body}  LUN 0 d\n }}\n}}\n"  # 4-


@pytest.mark.parametrize(
    "name",
    ["iqn.2006-10.net.vlnb:tgt", "iqn.1993-08.org.debian:01:abc", "iqn.2024-12.x",
     "eui.02004567a425678d", "naa.5001405abcdef012", "naa.6001405abcdef0126001405abcdef012"],
)  # fmt: skip
def test_valid_iscsi_names(name: str) -> None:
    assert iscsi_name_error(name, "name") is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("notaniqn", "is not an iSCSI name"),
        ("iqn.2024-13.org.x:t", "is not an iSCSI name"),  # month 13
        ("iqn.24-01.org.x:t", "is not an iSCSI name"),
        ("iqn.2024-01.org_x:t", "is not an iSCSI name"),  # '_' is not in RFC 3722's set
        ("eui.02004567A425678D", "write eui.02004567a425678d"),
        ("IQN.2024-01.ORG.X:T", "write iqn.2024-01.org.x:t"),
        ("naa.5001405abc", "is not an iSCSI name"),
    ],
)
def test_invalid_iscsi_names(name: str, words: str) -> None:
    problem = iscsi_name_error(name, "name")
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("HeaderDigest", "CRC32C,None", True),
        ("HeaderDigest", "Bogus", False),
        ("HeaderDigest", "None,None", False),
        ("MaxRecvDataSegmentLength", "-5", False),
        ("MaxRecvDataSegmentLength", "511", False),
        ("MaxRecvDataSegmentLength", "16777215", True),
        ("MaxRecvDataSegmentLength", "0x1000", False),
        ("ErrorRecoveryLevel", "3", False),
        ("DefaultTime2Wait", "3600", True),
        ("InitialR2T", "yes", False),
        ("IFMarkInt", "2048~65535", True),
        ("TargetAlias", "my disk", True),
    ],
)
def test_iscsi_parameters_follow_rfc_7143(key: str, value: str, ok: bool) -> None:
    assert (iscsi_param_error(key, value) is None) is ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (tgt("notaniqn", ""), "c.conf:5: iSCSI target name 'notaniqn' is not an iSCSI name; "
         "write iqn.YYYY-MM.reversed.domain[:id], eui.<16 hex digits> or naa.<16 or 32 hex "
         "digits> (RFC 3720 3.2.6.3)"),
        (tgt("iqn.2024-01.org.X:t", ""), "c.conf:5: iSCSI target name 'iqn.2024-01.org.X:t' "
         "has upper-case letters: iSCSI names are case-folded (RFC 3722) and LIO compares "
         "them exactly; write iqn.2024-01.org.x:t"),
        (tgt("iqn.2024-01.org.x:t", "  HeaderDigest Bogus\n"),
         "c.conf:6: HeaderDigest 'Bogus' is not valid; use one or more of CRC32C, None"),
        (tgt("iqn.2024-01.org.x:t", "  MaxRecvDataSegmentLength -5\n"),
         "c.conf:6: MaxRecvDataSegmentLength '-5' is out of range; use a decimal number "
         "512..16777215 (RFC 7143)"),
        (tgt("iqn.2024-01.org.x:t", '  IncomingUser "joe short"\n'),
         "c.conf:5: CHAP secret of joe is 5 bytes; use 12 to 16 (RFC 7143 wants 12 or more, "
         "the Windows initiator at most 16) (target iqn.2024-01.org.x:t)"),
        (tgt("iqn.2024-01.org.x:t", '  OutgoingUser "tgt 0123456789abcdefg"\n'),
         "c.conf:5: CHAP secret of tgt is 17 bytes; use 12 to 16 (RFC 7143 wants 12 or more, "
         "the Windows initiator at most 16) (target iqn.2024-01.org.x:t)"),
        (tgt("iqn.2024-01.org.x:t", f"  GROUP {'g' * 64} {{\n   LUN 0 d\n  }}\n"),
         f"c.conf:6: group name {'g' * 32!r}... is 64 bytes; LIO's ACL tag holds 63: "
         "shorten it"),
        (tgt("iqn.2024-01.org.x:t", "  GROUP g {\n   LUN 0 d\n   INITIATOR foo\n  }\n"),
         "c.conf:8: initiator name 'foo' is not an iSCSI name; write iqn.YYYY-MM.reversed."
         "domain[:id], eui.<16 hex digits> or naa.<16 or 32 hex digits> (RFC 3720 3.2.6.3) "
         "(in group g of target iqn.2024-01.org.x:t)"),
        (tgt("iqn.2024-01.org.x:t", "  LUN 16384 d\n"),
         "c.conf:6: LUN 16384 in target iqn.2024-01.org.x:t is out of range 0..16383"),
    ],
)  # fmt: skip
def test_semantic_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        conf.parse(DEV + text, "c.conf")
    assert message in str(info.value).splitlines()


def test_the_shell_refuses_with_the_config_files_messages() -> None:
    config = ScstConfig()
    with pytest.raises(ConfigError) as shell_error:
        edits.add_group(config, "g" * 64)
    with pytest.raises(ConfigError) as file_error:
        conf.parse(DEV + f"GROUP {'g' * 64} {{\n LUN 0 d\n}}\n", "c.conf")
    assert str(file_error.value) == f"c.conf:4: {shell_error.value}"
    with pytest.raises(ConfigError) as chap_error:
        edits.check_secret("joe", "short")
    assert str(chap_error.value).startswith("CHAP secret of joe is 5 bytes; use 12 to 16")
