#!/usr/bin/env bash
# Download the wheels bench/gpu.sh needs on a GPU machine without a package index (bench/gpu-wheels.txt), for
# CPython 3.12 on manylinux x86_64, into DIR; run it where pip reaches PyPI, then bring DIR along (the device tool's
# carry) and run `bash bench/gpu.sh --wheels DIR` there.
#
#   bash bench/gpu-wheels.sh DIR
set -euo pipefail

if (($# != 1)); then
  echo "usage: bash bench/gpu-wheels.sh DIR" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mapfile -t wheels < <(grep -v '^[[:space:]]*#' "$here/gpu-wheels.txt" | awk 'NF == 2 {print $2}')
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --dest "$dir" "${wheels[@]}"
echo "${#wheels[@]} wheels in $dir ($(du -sh "$dir" | cut -f1)): $(cd "$dir" && printf '%s ' *.whl)"
