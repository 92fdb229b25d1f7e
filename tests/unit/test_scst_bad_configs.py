"""The corpus of bad scst.conf files (tests/fixtures/bad-configs): each one is refused by
``tcmu-scst config check`` with exactly the error lines of its ``.expected`` file
(``@FILE@`` and ``@DIR@`` stand for the copy's path and directory), exit 1, no
traceback, nothing applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcmu_scst.testing.fake_configfs import FakeConfigfs
from tests.unit.test_scst_cli import fake, run

__all__ = ["fake"]  # the fixture, used by name

CORPUS = Path(__file__).parent.parent / "fixtures" / "bad-configs"
PREFIX = "tcmu-scst config: error: "


def backing_files(directory: Path) -> None:
    """What the corpus' vdisk files point at through @DIR@."""
    (directory / "ok.img").write_bytes(b"\0" * 4096)
    (directory / "a,b.img").write_bytes(b"\0" * 4096)
    (directory / "short.img").write_bytes(b"\0" * 1000)
    (directory / "empty.img").write_bytes(b"")
    (directory / "dir").mkdir()


def test_the_corpus_has_at_least_sixty_files() -> None:
    assert len(sorted(CORPUS.glob("*.conf"))) >= 60


@pytest.mark.parametrize("source", sorted(CORPUS.glob("*.conf")), ids=lambda p: p.stem)
def test_bad_config_is_refused_with_its_exact_errors(
    fake: FakeConfigfs, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: Path
) -> None:
    backing_files(tmp_path)
    path = tmp_path / source.name
    path.write_text(source.read_text(encoding="utf-8").replace("@DIR@", str(tmp_path)))
    code = run(tmp_path, "check", str(path))
    captured = capsys.readouterr()
    expected = source.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    got = [
        line.removeprefix(PREFIX).replace(str(path), "@FILE@").replace(str(tmp_path), "@DIR@")
        for line in captured.err.splitlines()
    ]
    assert code == 1
    assert all(line.startswith(PREFIX) for line in captured.err.splitlines())
    assert got == expected
    assert all(line.startswith("@FILE@:") for line in got)  # every error names file:line
    assert "Traceback" not in captured.out + captured.err
    assert fake.log == []  # nothing applied
