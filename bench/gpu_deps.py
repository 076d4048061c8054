"""The imports bench/gpu.sh needs beyond a bare GPU machine's packages (bench/gpu-wheels.txt), made importable
without a package index: each import is tried, and only the wheels of those that fail are installed, from a folder
of wheels prepared beforehand (bash bench/gpu-wheels.sh DIR), with ``pip --no-index --no-deps`` into a target folder
that the caller puts on PYTHONPATH. Says which it installed, and refuses (exit status 1) naming the import, the
wheel and the fix when one stays missing. Standard library only: it runs before anything else can be imported.

    python3 bench/gpu_deps.py --wheels DIR --target /tmp/site   # then PYTHONPATH=/tmp/site:$PYTHONPATH

The last line: `gpu deps: all <N> imports present` or `gpu deps: installed <wheels> from <DIR> into <target>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

LIST = Path(__file__).with_name("gpu-wheels.txt")


def read_list(path: Path) -> list[tuple[str, str]]:
    """(import name, pinned wheel requirement) per line of the list; comments and blank lines skipped."""
    entries = []
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            if len(words) != 2:
                raise SystemExit(f"{path}: expected 'import-name requirement', got {line!r}")
            entries.append((words[0], words[1]))
    return entries


def failing_imports(modules: list[str], extra_path: Path | None) -> list[str]:
    """The modules that do not import in a fresh interpreter (with ``extra_path`` first on PYTHONPATH)."""
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    failing = []
    for module in modules:
        done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        if done.returncode:
            failing.append(module)
    return failing


def install(requirements: list[str], wheels: Path, target: Path) -> None:
    """pip install the pinned ``requirements`` from ``wheels`` only (no index, no dependencies) into ``target``."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command = [*pip, "--no-index", "--no-deps", "--no-compile", "--find-links", str(wheels), "--target", str(target)]
    command += requirements
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"gpu deps: pip could not install {requirements} from {wheels}:\n{done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, required=True, help="folder of wheels (bash bench/gpu-wheels.sh DIR)")
    parser.add_argument("--target", type=Path, required=True, help="folder to install into (put it on PYTHONPATH)")
    parser.add_argument("--list", type=Path, default=LIST, help="import names and their wheels")
    args = parser.parse_args(argv)
    entries = read_list(args.list)
    missing = failing_imports([module for module, _ in entries], None)
    if not missing:
        print(f"gpu deps: all {len(entries)} imports present")
        return 0
    wanted = [requirement for module, requirement in entries if module in missing]
    if not args.wheels.is_dir():
        print(f"gpu deps: {', '.join(missing)} cannot be imported and there is no wheel folder {args.wheels}: run "
              f"`bash bench/gpu-wheels.sh {args.wheels}` where pip reaches PyPI and bring that folder along",
              file=sys.stderr)  # fmt: skip
        return 1
    install(wanted, args.wheels, args.target)
    still = failing_imports(missing, args.target)
    if still:
        python = sys.version.split()[0]
        print(f"gpu deps: {', '.join(still)} still cannot be imported after installing {wanted} from {args.wheels}; "
              f"check the wheels against this machine's Python ({python})", file=sys.stderr)  # fmt: skip
        return 1
    print(f"gpu deps: installed {' '.join(wanted)} from {args.wheels} into {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
