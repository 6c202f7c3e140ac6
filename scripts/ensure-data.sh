#!/usr/bin/env bash
# Make sure the default benchmark data (Fashion-MNIST, Debian package dataset-fashion-mnist) is present.
set -euo pipefail
dir="${DEEPSHRINK_DATA:-/usr/share/datasets}/fashion-mnist"
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then
  exit 0
fi
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian package dataset-fashion-mnist ..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
elif command -v sudo >/dev/null 2>&1; then
  echo "installing Debian package dataset-fashion-mnist (sudo) ..." >&2
  sudo apt-get update -qq >/dev/null
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "Fashion-MNIST not found in $dir and apt-get is not available: install the Debian package" \
       "dataset-fashion-mnist, or set DEEPSHRINK_DATA to a folder holding fashion-mnist/*-idx*-ubyte.gz" >&2
  exit 1
fi
