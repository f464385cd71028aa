"""Build the listener's compiled pgoutput decoder: `cdc_listener/pgoutput.py` compiled by
mypyc into the extension module `cdc_listener._pgoutput_native` (next to the sources, as an
editable install finds it). `make install` runs it; nothing is required of it.

The compiled module is the same source as the pure reference, copied under the extension's
name with one line added: the SHA-256 of the source it was built from, which
:mod:`cdc_listener.decoder` compares with the source beside it, so a decoder edited after the
build is never shadowed by a stale compiled copy. When mypyc or a C compiler is missing, or
the build fails, it says so and exits 0: the listener then runs the pure decoder and logs it.
`--check` exits 1 unless an up-to-date compiled decoder is in place.
Run: .venv/bin/python -m devtools.build_decoder [--force | --check]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cdc_listener"
SOURCE = PACKAGE / "pgoutput.py"
NATIVE = "_pgoutput_native"
# Imported by the decoder's source (and by those, in turn): copied into the build tree so mypy
# resolves them there; only the decoder itself is compiled.
SIBLINGS = ("cdc_listener/errors.py", "cdc_listener/pgoutput_messages.py", "mescache/errors.py")


def source_digest(source: Path = SOURCE) -> str:
    """The SHA-256 a compiled decoder built from `source` carries."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def suffix() -> str:
    """This interpreter's suffix of extension modules (``.cpython-311-x86_64-linux-gnu.so``)."""
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def target() -> Path:
    """Where the extension goes: beside the sources."""
    return PACKAGE / f"{NATIVE}{suffix()}"


def remove() -> None:
    """Remove the compiled decoder (both of its files), if any."""
    for path in PACKAGE.glob(f"{NATIVE}*{suffix()}"):
        path.unlink()


def built_digest() -> str | None:
    """The source digest of the compiled decoder in place, None if there is none."""
    if not target().exists():
        return None
    probe = "from cdc_listener import _pgoutput_native as n; print(n.SOURCE_SHA256)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def _compiler() -> str | None:
    compiler = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler)


def build() -> Path:
    """Compile the decoder in a scratch tree and move the extension into the package."""
    digest = source_digest()
    with tempfile.TemporaryDirectory(prefix="mescache-decoder-") as tmp:
        root = Path(tmp)
        package = root / "cdc_listener"
        for name in SIBLINGS:
            copy = root / name
            if not copy.parent.exists():
                copy.parent.mkdir()
                (copy.parent / "__init__.py").write_text("")
            shutil.copyfile(ROOT / name, copy)
        text = SOURCE.read_text(encoding="utf-8")
        line = f'\nSOURCE_SHA256: Final = "{digest}"  # written by devtools/build_decoder.py\n'
        (package / f"{NATIVE}.py").write_text(text + line, encoding="utf-8")
        script = (
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"setup(name='decoder', ext_modules=mypycify(['cdc_listener/{NATIVE}.py'],"
            " opt_level='3'))\n"
        )
        (root / "setup.py").write_text(script)
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        )
        # mypyc makes the module's shim and a library of its own beside it: both are needed.
        built = sorted(package.glob(f"{NATIVE}*{suffix()}"))
        if target().name not in {path.name for path in built}:
            raise RuntimeError(f"mypyc built {[path.name for path in built]}, not {target().name}")
        remove()
        for path in built:
            temporary = PACKAGE / f"{path.name}.tmp"
            shutil.copyfile(path, temporary)
            temporary.replace(PACKAGE / path.name)  # atomic: a running listener keeps its copy
    return target()


def main(argv: list[str] | None = None) -> int:
    """Build the compiled decoder when its source changed; 0 also when no compiler (pure path)."""
    parser = argparse.ArgumentParser(prog="build_decoder", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--check", action="store_true", help="exit 1 unless up to date")
    args = parser.parse_args(argv)
    fresh = built_digest() == source_digest()
    if args.check:
        print(f"compiled decoder: {'up to date' if fresh else 'missing or stale'}")
        return 0 if fresh else 1
    if fresh and not args.force:
        print(f"compiled decoder up to date: {target().name}")
        return 0
    try:
        import mypyc  # noqa: F401, PLC0415  # only to say clearly that it is missing
    except ImportError:
        print("compiled decoder not built (mypyc missing): the listener uses the pure decoder")
        return 0
    if _compiler() is None:
        print("compiled decoder not built (no C compiler): the listener uses the pure decoder")
        return 0
    try:
        path = build()
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"compiled decoder not built ({detail.strip()[-2000:]}):")
        print("the listener uses the pure decoder")
        with contextlib.suppress(OSError):
            remove()  # never leave a stale one behind a failed rebuild
        return 0
    print(f"compiled decoder built: {path.relative_to(PACKAGE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
