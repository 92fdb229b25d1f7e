"""The dev_config codec every handler shares (tcmu_scst.kernel.devconfig)."""

from __future__ import annotations

from urllib.parse import quote as url_quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcmu_scst.errors import ConfigError
from tcmu_scst.kernel import devconfig


@given(st.text())
def test_quote_round_trip_and_forbidden_characters(text: str) -> None:
    quoted = devconfig.quote(text)
    assert devconfig.unquote(quoted, "t") == text
    assert not set(quoted) & set(",;=:\n\r\t ")
    assert quoted.isascii()


def test_paths_stay_readable() -> None:
    assert devconfig.quote("/srv/img/disk-1_a.img") == "/srv/img/disk-1_a.img"
    assert devconfig.quote("a b,c:d;e=f%") == "a%20b%2Cc%3Ad%3Be%3Df%25"
    assert devconfig.quote("é") == "%C3%A9"


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_values_written_by_urllib_quote_decode_the_same(text: str) -> None:
    # vcdrom and the SCST layer's fallback form used urllib's quote before the codec
    # was shared: dev_configs already in the kernel must still read back.
    assert devconfig.unquote(url_quote(text, safe="/._-"), "t") == text


def test_encode_decode_tokens() -> None:
    text = devconfig.encode("vdisk", [("n", "d 1"), ("wt", None), ("bs", 4096)], who="d",
                            hint="h")  # fmt: skip
    assert text == "vdisk/n=d%201;wt;bs=4096"
    decoded = devconfig.decode(text, ["vdisk"])
    assert decoded.subtype == "vdisk"
    assert decoded.tokens == (("n", "d 1"), ("wt", None), ("bs", "4096"))
    assert decoded.values(["n", "bs"], flags=["wt"]) == {"n": "d 1", "wt": None, "bs": "4096"}
    assert devconfig.number(decoded, "bs", "4096") == 4096


def test_encode_refuses_what_the_kernel_would_cut() -> None:
    assert len(devconfig.encode("x", [("f", "a" * 251)], who="w", hint="h")) == 255
    with pytest.raises(ConfigError, match="w: dev_config is 256 characters, over the kernel's "
                       "255; shorten it"):  # fmt: skip
        devconfig.encode("x", [("f", "a" * 252)], who="w", hint="shorten it")
    with pytest.raises(ConfigError, match="over the kernel's 255"):
        devconfig.encode("x", [("f", "é" * 125)], who="w", hint="h")  # bytes, not characters


@pytest.mark.parametrize(("text", "message"), [
    ("vcdrom/n=x", "does not start with vdisk/"),
    ("vdisk", "does not start with vdisk/"),
    ("vdisk/n=%4", "bad escape '%4'"),
    ("vdisk/n=x;q", "unknown item 'q'; known: bs, n, wt"),
    ("vdisk/n=x;wt=1", "unknown item 'wt=1'"),
    ("vdisk/n;bs=1", "unknown item 'n'"),
])  # fmt: skip
def test_decode_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        devconfig.decode(text, ["vdisk"]).values(["n", "bs"], flags=["wt"])


def test_number_refuses_text_and_flags() -> None:
    decoded = devconfig.decode("vdisk/bs=x", ["vdisk"])
    with pytest.raises(ConfigError, match="bs='x' is not a number"):
        devconfig.number(decoded, "bs", "x")
    with pytest.raises(ConfigError, match="bs=None is not a number"):
        devconfig.number(decoded, "bs", None)
