"""The benchmark generator's gzipped parts hold exactly the stream a single file gets."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from benchmarks import generate


@pytest.mark.parametrize("external_gzip", [True, False])
def test_parts_concatenate_to_the_single_file_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, external_gzip: bool
) -> None:
    if not external_gzip:
        monkeypatch.setattr(generate.shutil, "which", lambda _: None)  # Python's gzip instead
    n, size, types = generate.write_parts(generate.generate_events(2500, seed=3), str(tmp_path / "p"), 1000)
    single = io.BytesIO()
    expected = generate.write_jsonl(generate.generate_events(2500, seed=3), single)
    parts = sorted((tmp_path / "p").iterdir())
    assert [p.name for p in parts] == ["part-000000.jsonl.gz", "part-000001.jsonl.gz", "part-000002.jsonl.gz"]
    assert [gzip.decompress(p.read_bytes()).count(b"\n") for p in parts] == [1000, 1000, 500]
    assert b"".join(gzip.decompress(p.read_bytes()) for p in parts) == single.getvalue()
    assert (n, size, types) == expected
