#!/usr/bin/env bash
# Bring your own model, end to end: exactly the commands of README.md, in order.
# Run from anywhere: `bash examples/byom/run_all.sh`. Writes data/, weights/ and runs/ (all git-ignored).
# Environment: PYTHON (default python3) is the interpreter with trtopt installed;
# about 1.5 min on 2 CPU cores; BYOM_BASELINE=report.json gates against your
# accepted report instead of the step-by-step run.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
# byom_models importable without installing it (same as `pip install -e .` here)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
trtopt() { "$PY" -m trtopt "$@"; }

R=runs/detector
mkdir -p "$R" runs/encoder

# 1. data (the project's own script)
"$PY" make_data.py --out data

# 2. dense training (the project's own script)
"$PY" train.py --data data --out weights

# 3. 2:4 prune + masked fine-tune with the project's loss, export of the sparse model
trtopt prune --model byom_models.detector:make_detector --weights weights/detector.pt \
  --input image:float32:batchx1x32x32 --data data/det_train.npz \
  --method magnitude --finetune-epochs 3 --loss byom_models.losses:detection_loss \
  --output-name boxes --output-name logits \
  --out-module "$R/sparse.pt" --out-masks "$R/masks.pt" --onnx "$R/sparse24-fp32.onnx" --report "$R/prune.json"

# 4. export of the dense model
trtopt export --model byom_models.detector:make_detector --weights weights/detector.pt \
  --input image:float32:batchx1x32x32 --output-name boxes --output-name logits --out "$R/fp32.onnx"

# 5. calibration (entropy/auto ranges) of the dense and the sparse model
trtopt calibrate "$R/fp32.onnx" --data data/det_calib.npz --out "$R/calib"
trtopt calibrate "$R/sparse24-fp32.onnx" --data data/det_calib.npz --out "$R/calib"

# 6. quantization: FP16, INT8 (Q/DQ), sparse INT8
trtopt quantize "$R/fp32.onnx" --fp16 --calib-data data/det_calib.npz --out "$R/fp16.onnx"
trtopt quantize "$R/fp32.onnx" --calib "$R/calib/fp32.calib.json" --regression-output boxes --out "$R/int8.onnx"
trtopt quantize "$R/sparse24-fp32.onnx" --calib "$R/calib/sparse24-fp32.calib.json" --regression-output boxes --out "$R/sparse24-int8.onnx"

# 7. TensorRT-RTX engines (ahead of time, no GPU needed), where TensorRT-RTX is installed
if "$PY" -c "import tensorrt_rtx" 2>/dev/null; then
  trtopt build --backend tensorrt-rtx --precision int8 "$R/int8.onnx" \
    --input image:float32:batch=1..64..64x1x32x32 --engine-dir "$R/engines"
  trtopt build --backend tensorrt-rtx --precision int8 --sparsity "$R/sparse24-int8.onnx" \
    --input image:float32:batch=1..64..64x1x32x32 --engine-dir "$R/engines"
else
  echo "build: skipped (TensorRT-RTX not installed: pip install -e \".[tensorrt-rtx]\")"
fi

# 8. benchmark on ONNX Runtime with the project's metric (hit rate)
trtopt bench "$R/fp32.onnx" "$R/fp16.onnx" "$R/int8.onnx" "$R/sparse24-fp32.onnx" "$R/sparse24-int8.onnx" \
  --data data/det_eval.npz --metric byom_models.metrics:hit_rate --regression-output boxes \
  --reference sparse24-fp32=none --reference sparse24-int8=sparse24-fp32 \
  --batch 64 --min-duration 0.5 --out "$R/bench"

# 9a. the same chain as one command: the detector recipe
trtopt run recipes/detector.toml --out runs/detector-recipe

# 9b. the two-input encoder recipe (token ids + mask; fine-tune with distillation)
trtopt run recipes/encoder.toml --out runs/encoder-recipe

# 10. gate: the recipe run against the step-by-step run (or your accepted baseline report)
trtopt gate runs/detector-recipe/report.json --baseline "${BYOM_BASELINE:-$R/bench/report.json}" --overrides gate.toml

# 11. the encoder from the command line: two int64 inputs
trtopt export --model byom_models.encoder:make_encoder --weights weights/encoder.pt \
  --input input_ids:int64:batchx32 --input attention_mask:int64:batchx32 --out runs/encoder/fp32.onnx
trtopt calibrate runs/encoder/fp32.onnx --data data/enc_calib.npz --out runs/encoder/calib
trtopt quantize runs/encoder/fp32.onnx --calib runs/encoder/calib/fp32.calib.json --out runs/encoder/int8.onnx
trtopt bench runs/encoder/fp32.onnx runs/encoder/int8.onnx --data data/enc_eval.npz --batch 64 \
  --min-duration 0.5 --out runs/encoder/bench
