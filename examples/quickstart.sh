#!/usr/bin/env bash
# The whole method on CPU in a few minutes, on the pretrained toy model (examples/toy/model: a tiny
# Wan2.1-I2V trained on the synthetic world of examples/toy/world.py, see examples/toy/MODEL_CARD.md):
#   prepare.py -> train.py (stage 1 + stage 2) -> infer.py (with and without the LoRA) -> evaluate.py
# The example: a red disc moving down over a gradient (9 frames, 32x32, a held-out clip the model never
# saw); its first frame recolored cyan. A recolor, so it trains with the remedy README "Toy-scale proof"
# measured for appearance edits (appearance augmentation + the edited first frame as a sample); the result
# and the base model without the LoRA are scored against the exact ground truth and shown side by side.
# Settings (environment): QUICKSTART_OUT (default runs/quickstart), QUICKSTART_STEPS (stage-1 steps,
# default 100), QUICKSTART_INFER_STEPS (denoising steps, default 20), QUICKSTART_MODEL (default the toy model),
# QUICKSTART_PREVIEWS (training.preview_every_n_steps, default auto: 4 scored previews, the best LoRA kept; README
# "Previews and selection" measured it on the toy: better than the last step's LoRA in 12 of 20 runs, for ~10% time).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${QUICKSTART_OUT:-runs/quickstart}"
STEPS="${QUICKSTART_STEPS:-100}"
INFER_STEPS="${QUICKSTART_INFER_STEPS:-20}"
MODEL="${QUICKSTART_MODEL:-examples/toy/model}"
PREVIEWS="${QUICKSTART_PREVIEWS:-auto}"
case "$PREVIEWS" in ''|*[!0-9]*) PREVIEWS="'$PREVIEWS'" ;; esac  # a word is a TOML string, a number stays one
EX=examples/toy/example
JOB="$OUT/job"
mkdir -p "$OUT"
OUT_ABS="$(cd "$OUT" && pwd)"

echo "== 1/4 prepare the example job: $JOB"
python prepare.py --video "$EX/source" --source-fps 16 --mask "$EX/masks" \
    --edited-frame "$EX/edited_first.png" --reference-frames "$EX/reference" \
    --caption "a red disc moves down over a sand-pink gradient" \
    --edited-caption "a cyan disc moves down over a sand-pink gradient" \
    --model "$MODEL" --frames 9 --size 32x32 --out "$JOB" --force \
    --set "model.dtype='float32'" --set adapter.rank=8 --set optimizer.lr=1e-3 --set training.appearance_augment=3 \
    --set training.first_frame_reference=true \
    --set "training.steps=$STEPS" --set "training.reference_steps=$(( (STEPS + 1) / 2 ))" \
    --set training.activation_checkpointing=false --set training.save_every_n_steps=0 \
    --set "training.preview_every_n_steps=$PREVIEWS" \
    --set "inference.steps=$INFER_STEPS" --set inference.guidance=1.0 \
    --set "output_dir='$OUT_ABS/runs'"

echo "== 2/4 train (stage 1 on the clip, stage 2 with the edited later frame)"
python train.py --config "$JOB/edit.toml"

echo "== 3/4 generate the edited clip, and the base model's own attempt without the LoRA"
python infer.py --config "$JOB/edit.toml" --out "$OUT/result" --save-frames
python infer.py --config "$JOB/edit.toml" --no-lora --out "$OUT/no-lora"

echo "== 4/4 measure both against the exact ground truth (background kept, edit propagated, motion)"
python evaluate.py --config "$JOB/edit.toml" --result "$OUT/result/result.mp4" --result "$OUT/no-lora/result.mp4" \
    --truth "$EX/truth" --out "$OUT/compare"

LORA=$(ls -t "$OUT"/runs/*/*/lora.safetensors | head -n 1)
VERDICT=$(python - "$OUT/compare/evaluation.json" <<'PY'
import json, sys
lora, base = (r["summary"] for r in json.load(open(sys.argv[1]))["results"])
def f(v): return f"{float(v):.1f}"
print(f"against the exact ground truth, LoRA vs no LoRA: whole frame {f(lora['psnr_truth'])} vs {f(base['psnr_truth'])} dB,"
      f" edit region {f(lora['psnr_truth_edit'])} vs {f(base['psnr_truth_edit'])} dB,"
      f" kept region {f(lora['psnr_kept'])} vs {f(base['psnr_kept'])} dB (PSNR, higher is better)")
PY
)
cat <<MSG

Done. Outputs:
  edited video   $OUT/result/result.mp4  (PNG frames in $OUT/result/frames/)
  side by side   $OUT/result/side_by_side.mp4   (source | result | where it may change; enlarged to view)
  comparison     $OUT/compare/comparison.png and comparison.mp4: source, ground truth, the result and
                 the base model without the LoRA, every frame, enlarged and labelled
  evaluation     $OUT/compare/evaluation.json + evaluation.png
  LoRA           $LORA  (with previews: the best-scoring one; the last step's is lora_last.safetensors)
  previews       $(dirname "$LORA")/previews/  (what the LoRA made while it trained, scored; summary.json lists them)
  job + preview  $JOB/  (look at $JOB/preview/)

This ran on the toy model ($STEPS training steps); $VERDICT.
README "Toy-scale proof" measures the method on held-out clips of every edit kind. For a real edit,
download Wan2.1-I2V-14B-480P (README "Model weights") and run the same steps on a GPU:
  python prepare.py --video examples/clip.mp4 --mask examples/mask.mp4 --edited-frame examples/edited_first.png \\
      --reference-frames examples/reference --caption "a red ball rolls along a park path" \\
      --edited-caption "a blue ball rolls along a park path" --model /path/to/Wan2.1-I2V-14B-480P-Diffusers --out jobs/ball
  python train.py --config jobs/ball/edit.toml --plan --gpu-memory 24GB   # memory and time first; what fits 24 GB
  python infer.py --config jobs/ball/edit.toml --plan --gpu-memory 24GB
  python train.py --config jobs/ball/edit.toml && python infer.py --config jobs/ball/edit.toml
(--plan needs no weights and no GPU; add the --set options it prints to the commands after it.)
MSG
