"""Write the atheris seed corpus: every input of the bad-input catalogue that a file can
hold (tests/test_bad_input.py, up to 64 KB each), one file each, named by its SHA-1 as
libFuzzer does. The corpus is generated, not committed.

    .venv/bin/python tests/fuzz/make_corpus.py [FOLDER]     # default: tests/fuzz/corpus
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_corpus(folder: Path) -> int:
    """Write the seeds into ``folder`` (created if needed); returns how many."""
    sys.path.insert(0, str(HERE.parent))  # tests/: the catalogue and its conftest
    from test_bad_input import catalogue_inputs

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for _name, data in catalogue_inputs():
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        count += 1
    return count


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    print(f"{write_corpus(target)} seeds in {target}")
