#!/usr/bin/env bash
# make demo: train LeNet-300-100 on Fashion-MNIST, compress it with the Deep Compression recipe,
# then evaluate, inspect and export the compressed file; then the low-rank chain on the same model.
# Everything lands in $RUNS.
set -euo pipefail
PY="${1:-.venv/bin/python}"
RUNS="${2:-runs/demo}"
mkdir -p "$RUNS"
DS="$PY -m deepshrink"

echo "== 1/6 train LeNet-300-100 on Fashion-MNIST (validation split carved from training data)"
$DS train --model lenet-300-100 --data fashion-mnist --epochs 20 -o "$RUNS/base.safetensors"

echo "== 2/6 compress: prune -> share -> Huffman-code -> one .dsz file"
$DS compress --model lenet-300-100 --weights "$RUNS/base.safetensors" --data fashion-mnist \
    --recipe deep-compression -o "$RUNS/model.dsz"

echo "== 3/6 evaluate the file alone (no model code, no weights file; the file records its data set)"
$DS eval "$RUNS/model.dsz"

echo "== 4/6 what is inside the file"
$DS info "$RUNS/model.dsz" --sha256

echo "== 5/6 export for conventional software"
$DS export "$RUNS/model.dsz" -o "$RUNS/model.onnx" --with-preprocessing   # takes raw uint8 images
$DS export "$RUNS/model.dsz" -o "$RUNS/model.safetensors"
echo "== 6/6 the low-rank route: prune the classifier, SLR for the fc layers, share, code; then evaluate and export"
$DS compress --model lenet-300-100 --weights "$RUNS/base.safetensors" --data fashion-mnist \
    --recipe lowrank-chain -o "$RUNS/model-lowrank.dsz"
$DS eval "$RUNS/model-lowrank.dsz" --data fashion-mnist
$DS export "$RUNS/model-lowrank.dsz" -o "$RUNS/model-lowrank.onnx"
ls -l "$RUNS"
