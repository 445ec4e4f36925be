"""Add bytecode to the Lambda bundle that `chalice package` wrote (it ships sources only).

Lambda's /var/task is read-only, so without .pyc files every cold start compiles botocore, pydantic,
pynamodb and the app again (docs/benchmarks.md measures it). The bundle's interpreter is this one
(chalice picks the Lambda runtime from it); `unchecked-hash` pycs stay valid whatever the zip's timestamps.

    python infra/bytecompile.py build/deployment.zip
"""

from __future__ import annotations

import compileall
import py_compile
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path


def bytecompile(bundle: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "bundle"
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(root)
        if not compileall.compile_dir(root, quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH):
            raise SystemExit(f"some modules in {bundle} do not compile")
        rebuilt = Path(scratch) / "bundle.zip"
        with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                archive.write(path, path.relative_to(root))
        shutil.move(rebuilt, bundle)
        return sum(1 for _ in root.rglob("*.pyc"))


if __name__ == "__main__":
    print(f"{bytecompile(Path(sys.argv[1]))} modules byte-compiled into {sys.argv[1]}")
