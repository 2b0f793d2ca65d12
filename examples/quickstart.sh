#!/usr/bin/env bash
# The whole method on the example clip, on CPU, in a few minutes:
#   tiny random model -> prepare.py -> train.py (stage 1 + stage 2) -> infer.py -> evaluate.py
# A tiny RANDOM model produces noise, not an edit: this shows the pipeline working end to end.
# Settings (environment): QUICKSTART_OUT (default runs/quickstart), QUICKSTART_STEPS (stage-1 steps,
# default 20), QUICKSTART_INFER_STEPS (denoising steps, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${QUICKSTART_OUT:-runs/quickstart}"
STEPS="${QUICKSTART_STEPS:-20}"
INFER_STEPS="${QUICKSTART_INFER_STEPS:-10}"
MODEL="${QUICKSTART_MODEL:-runs/tiny-wan}"
JOB="$OUT/job"
mkdir -p "$OUT"
OUT_ABS="$(cd "$OUT" && pwd)"

echo "== 1/5 tiny model: $MODEL"
if [ ! -f "$MODEL/model_index.json" ]; then
    python -m tools.make_tiny_model --family wan-i2v --layout diffusers --out "$MODEL"
fi

echo "== 2/5 prepare the example job: $JOB"
python prepare.py --video examples/clip.mp4 --mask examples/mask.mp4 \
    --edited-frame examples/edited_first.png --reference-frames examples/reference \
    --caption "a red ball rolls along a park path" --edited-caption "a blue ball rolls along a park path" \
    --model "$MODEL" --frames 17 --size 128x80 --out "$JOB" --force \
    --set "model.dtype='float32'" --set adapter.rank=8 --set optimizer.lr=1e-3 \
    --set "training.steps=$STEPS" --set "training.reference_steps=$(( (STEPS + 1) / 2 ))" \
    --set training.save_every_n_steps=0 --set "inference.steps=$INFER_STEPS" \
    --set "output_dir='$OUT_ABS/runs'"

echo "== 3/5 train (stage 1 on the clip, stage 2 with the edited later frame)"
python train.py --config "$JOB/edit.toml"

echo "== 4/5 generate the edited clip"
python infer.py --config "$JOB/edit.toml" --out "$OUT/result"

echo "== 5/5 measure it (background kept, edit propagated, motion consistent)"
python evaluate.py --config "$JOB/edit.toml" --result "$OUT/result/result.mp4"

LORA=$(ls -t "$OUT"/runs/*/*/lora.safetensors | head -n 1)
cat <<MSG

Done. Outputs:
  edited video   $OUT/result/result.mp4
  side by side   $OUT/result/side_by_side.mp4   (source | result | mask)
  evaluation     $OUT/result/evaluation.json + evaluation.png
  LoRA           $LORA
  job + preview  $JOB/  (look at $JOB/preview/)

This ran on a tiny RANDOM model, so the video is noise, not an edit. For a real edit, download
Wan2.1-I2V-14B-480P (README "Model weights") and run the same steps on a GPU:
  python prepare.py --video examples/clip.mp4 --mask examples/mask.mp4 --edited-frame examples/edited_first.png \\
      --reference-frames examples/reference --caption "a red ball rolls along a park path" \\
      --edited-caption "a blue ball rolls along a park path" --model /path/to/Wan2.1-I2V-14B-480P-Diffusers --out jobs/ball
  python train.py --config jobs/ball/edit.toml && python infer.py --config jobs/ball/edit.toml
MSG
