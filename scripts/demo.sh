#!/usr/bin/env bash
# make demo: train LeNet-300-100 on Fashion-MNIST, compress it with the Deep Compression recipe,
# then evaluate, inspect and export the compressed file; then the low-rank chain on the same model.
# Everything lands in $RUNS.
set -euo pipefail
PY="${1:-.venv/bin/python}"
RUNS="${2:-runs/demo}"
mkdir -p "$RUNS"
DS="$PY -m deepshrink"

echo "== 1/7 train LeNet-300-100 on Fashion-MNIST (validation split carved from training data)"
$DS train --model lenet-300-100 --data fashion-mnist --epochs 20 -o "$RUNS/base.safetensors"

echo "== 2/7 compress: prune -> share -> Huffman-code -> one .dsz file"
$DS compress --model lenet-300-100 --weights "$RUNS/base.safetensors" --data fashion-mnist \
    --recipe deep-compression -o "$RUNS/model.dsz"

echo "== 3/7 evaluate the file alone (no model code, no weights file; the file records its data set)"
$DS eval "$RUNS/model.dsz"

echo "== 4/7 what is inside the file"
$DS info "$RUNS/model.dsz" --sha256

echo "== 5/7 export for conventional software"
$DS export "$RUNS/model.dsz" -o "$RUNS/model.onnx" --with-preprocessing   # takes raw uint8 images
$DS export "$RUNS/model.dsz" -o "$RUNS/model.safetensors"
echo "== 6/7 the low-rank route: prune the classifier, SLR for the fc layers, share, code; then evaluate and export"
$DS compress --model lenet-300-100 --weights "$RUNS/base.safetensors" --data fashion-mnist \
    --recipe lowrank-chain -o "$RUNS/model-lowrank.dsz"
$DS eval "$RUNS/model-lowrank.dsz" --data fashion-mnist
$DS export "$RUNS/model-lowrank.dsz" -o "$RUNS/model-lowrank.onnx"

echo "== 7/7 the C engine: export the Deep Compression file as dependency-free C99, build it with cc, classify the test set"
$DS export "$RUNS/model.dsz" -o "$RUNS/engine" --format c      # weights stay packed in const arrays
make -s -C "$RUNS/engine"
DATA_DIR="${DEEPSHRINK_DATA:-/usr/share/datasets}/fashion-mnist"
idx() { if [ -f "$1.gz" ]; then zcat "$1.gz"; else cat "$1"; fi; }   # gzipped or raw IDX
# the IDX files' payloads are the raw uint8 images and labels the engine's main reads
idx "$DATA_DIR/t10k-images-idx3-ubyte" | tail -c +17 > "$RUNS/test-images.u8"
idx "$DATA_DIR/t10k-labels-idx1-ubyte" | tail -c +9 | od -An -v -tu1 -w1 | tr -d ' ' > "$RUNS/test-labels.txt"
"$RUNS/engine/main" "$RUNS/test-images.u8" > "$RUNS/engine-predictions.txt"
paste -d' ' "$RUNS/engine-predictions.txt" "$RUNS/test-labels.txt" | awk '
  $1 == $2 { ok++ } END { printf "C engine: test accuracy %.2f%% on %d Fashion-MNIST test images\n", 100 * ok / NR, NR }'
head -c 784 "$RUNS/test-images.u8" > "$RUNS/one-image.u8"
echo "C engine latency per image (one core): $("$RUNS/engine/main" --time 20000 "$RUNS/one-image.u8")"
( cd "$RUNS/engine" && size model.o | awk 'NR == 2 { printf "C engine flash (text + data of model.o): %d bytes\n", $1 + $2 }' )
echo "C engine RAM arena: $(awk '/define MODEL_ARENA_BYTES/ { print $3 }' "$RUNS/engine/model.h") bytes"
ls -l "$RUNS"
