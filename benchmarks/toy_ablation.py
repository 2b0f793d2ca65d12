"""The paper's ablation at toy scale, on held-out clips of the toy world with exact ground-truth edits.

    python -m benchmarks.toy_ablation                                  # the README's table (hours on 2 cores)
    python -m benchmarks.toy_ablation --seeds 2000000:2000010 --edits shape,size --variants a,b,default
    python -m benchmarks.toy_ablation --seeds 1000000:1000001 --runs 1 --variants a,default --steps 2 --infer-steps 2

Each held-out clip (world seeds `--seeds A:B`, never seen in pretraining, which used seeds below 1,000,000) gets
one edit of shape 0, the kinds of `--edits` taken in turn (recolor, shape swap, pattern, size, added object:
examples/toy/world.py), and `--runs` training/sampling seeds. Every variant goes through the project's own path
(`engine.train.job.run_training` and `engine.infer.generate.generate`, in-process) with the config of
examples/toy.toml, so `default` is exactly what the quickstart ships. Variants (`--variants`, default all):
  a        the base model from the edited first frame, no LoRA (`i2v` preset)
  a2       the base model with the mask-aware condition (`loraedit` preset), no LoRA
  b        naive LoRA (Sec. 3.1: training.mode = "naive", `i2v` preset)
  c        mask-aware LoRA (Sec. 3.3.1), every remedy below off
  c_paper  c with the paper's settings exactly: lr 1e-4, rank 16, uniform times, 100 steps
  c_r32, c_s200           c with more LoRA capacity / more steps
  c_edcap  c trained with the edited caption instead of the source's
  c_black, c_noise        c with the generated region shown black / as noise instead of Wan's 0.0
  c_w3     c with the edit region's loss weighted 3x
  c_ff     c + the edited first frame as a single-frame reference sample (stage 2)
  c_aug    c + 3 copies of the clip with the edit region recolored (appearance augmentation)
  c_ff_aug c_ff + c_aug
  c_aug_s200  c_aug with twice the steps (the augmented copies share the step budget with the clip)
  d        c + the ground-truth edited last frame as reference (Sec. 3.3.2)
  e        c in the low-cost short-clip mode (clips of 5 frames)
  default  examples/toy.toml as shipped (the quickstart's settings)
Also: the base model's prediction of each *source* clip from its own first frame against repeating that frame
(future frames), and the VAE's reconstruction PSNR (the ceiling of everything else).

Runs are resumable: each finished run is appended to WORK/rows.jsonl and its frames kept, so a rerun skips them;
`--shard i/n` splits the runs over n processes. Writes results.json (one record per clip, seed and variant),
table.md and one grid per edit kind (grid_<kind>.png) to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import toy_metrics  # noqa: E402
from config.atomic import write_atomic  # noqa: E402
from config.loader import load_config  # noqa: E402
from examples.toy import jobs, world  # noqa: E402

TOY_TOML = REPO / "examples" / "toy.toml"
# Every remedy off: the variants below switch on what they test.
PLAIN = ["training.first_frame_reference=false", "training.appearance_augment=0", "data.condition_fill='gray'",
         "training.edit_loss_weight=1.0", "training.low_cost=false"]
LORAEDIT = ["training.mode='loraedit'", *PLAIN]


@dataclass
class Variant:
    name: str
    label: str
    preset: str
    train: list[str] | None = None  # config overrides of the LoRA training; None: no LoRA
    trigger: bool = True
    reference: bool = False  # the ground-truth edited last frame as a stage-2 reference
    extra: list[str] = field(default_factory=list)  # overrides for training and sampling


VARIANTS = [
    Variant("a", "a: base, no LoRA", "i2v", trigger=False),
    Variant("a2", "a': base + mask-aware condition", "loraedit", trigger=False),
    Variant("b", "b: naive LoRA", "i2v", ["training.mode='naive'", *PLAIN]),
    Variant("c", "c: mask-aware LoRA", "loraedit", LORAEDIT),
    Variant("c_paper", "c, paper settings (lr 1e-4, r16)", "loraedit",
            [*LORAEDIT, "optimizer.lr=1e-4", "adapter.rank=16", "training.steps=100",
             "training.timestep_sample_method='uniform'", "training.shift=1.0"]),
    Variant("c_r32", "c, rank 32", "loraedit", [*LORAEDIT, "adapter.rank=32"]),
    Variant("c_s200", "c, 2x steps", "loraedit", LORAEDIT, extra=["@steps*2"]),
    Variant("c_edcap", "c, trained on the edited caption", "loraedit", LORAEDIT, extra=["@edited-caption"]),
    Variant("c_black", "c, black fill", "loraedit", LORAEDIT, extra=["data.condition_fill='black'"]),
    Variant("c_noise", "c, noise fill", "loraedit", LORAEDIT, extra=["data.condition_fill='noise'"]),
    Variant("c_w3", "c, edit loss x3", "loraedit", [*LORAEDIT, "training.edit_loss_weight=3.0"]),
    Variant("c_ff", "c + edited first frame sample", "loraedit", [*LORAEDIT, "training.first_frame_reference=true"]),
    Variant("c_aug", "c + appearance augmentation", "loraedit", [*LORAEDIT, "training.appearance_augment=3"]),
    Variant("c_ff_aug", "c + first frame + augmentation", "loraedit",
            [*LORAEDIT, "training.first_frame_reference=true", "training.appearance_augment=3"]),
    Variant("c_aug_s200", "c + augmentation, 2x steps", "loraedit", [*LORAEDIT, "training.appearance_augment=3"],
            extra=["@steps*2"]),
    Variant("d", "d: c + reference frame", "loraedit", LORAEDIT, reference=True),
    Variant("e", "e: c, low-cost clips", "loraedit", [*LORAEDIT, "training.low_cost=true"]),
    Variant("default", "default (examples/toy.toml)", "loraedit", []),
]
BY_NAME = {v.name: v for v in VARIANTS}
DEFAULT = "c"  # the method's defaults (config/schema.py, examples/edit.toml): mask-aware LoRA, every remedy off
# What examples/toy.toml and the quickstart (a recolor) ship: the remedy for appearance edits the ablation found.
# tests/test_toy_model.py checks that toy.toml's settings equal this variant's.
RECOLOR = "c_ff_aug"
# (claim, variant, baseline variant, score, True if lower is better)
CLAIMS = [
    ("the default beats the base model (whole frame)", DEFAULT, "a", "whole_psnr", False),
    ("the default beats naive LoRA (whole frame)", DEFAULT, "b", "whole_psnr", False),
    ("the default keeps the edited color at least as well as the base model", DEFAULT, "a", "color_error", True),
    ("the default keeps the background better than naive LoRA", DEFAULT, "b", "kept_psnr", False),
    ("the recolor remedy beats the base model (whole frame)", RECOLOR, "a", "whole_psnr", False),
    ("the recolor remedy beats naive LoRA (whole frame)", RECOLOR, "b", "whole_psnr", False),
    ("the recolor remedy keeps the edited color at least as well as the base model", RECOLOR, "a", "color_error",
     True),
    ("the recolor remedy keeps the background better than naive LoRA", RECOLOR, "b", "kept_psnr", False),
    ("mask-aware LoRA keeps the background better than the base model", "c", "a", "kept_psnr", False),
    ("the mask-aware edit follows the source motion (color-blind) better than naive LoRA", "c", "b",
     "motion_error", True),
    ("a reference frame improves the edit region (PSNR)", "d", "c", "edit_psnr", False),
    ("the low-cost mode keeps the background like the full mode", "e", "c", "kept_psnr", False),
    ("the paper's settings against the toy's (whole frame)", "c_paper", "c", "whole_psnr", False),
    ("the paper's settings against the toy's (color)", "c_paper", "c", "color_error", True),
    ("appearance augmentation (whole frame)", "c_aug", "c", "whole_psnr", False),
    ("appearance augmentation (color)", "c_aug", "c", "color_error", True),
    ("appearance augmentation with twice the steps (whole frame)", "c_aug_s200", "c", "whole_psnr", False),
    ("the edited first frame as a sample (whole frame)", "c_ff", "c", "whole_psnr", False),
    ("the edited first frame as a sample (color)", "c_ff", "c", "color_error", True),
    ("first frame + augmentation (whole frame)", "c_ff_aug", "c", "whole_psnr", False),
    ("first frame + augmentation (color)", "c_ff_aug", "c", "color_error", True),
    ("the edited caption in training (whole frame)", "c_edcap", "c", "whole_psnr", False),
    ("noise fill (whole frame)", "c_noise", "c", "whole_psnr", False),
    ("edit loss x3 (whole frame)", "c_w3", "c", "whole_psnr", False),
    ("rank 32 (whole frame)", "c_r32", "c", "whole_psnr", False),
]
# The acceptance claims, checked per edit kind (wins / runs of that kind).
KIND_CLAIMS = CLAIMS[:8]


def kind_claims_table(rows: list[dict], kinds: list[str]) -> str:
    """Markdown: each KIND_CLAIMS claim per edit kind as `wins/runs (mean paired difference)`."""
    lines = ["| claim | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for text, v, base, score, lower in KIND_CLAIMS:
        cells = []
        for kind in kinds:
            diffs, wins = toy_metrics.paired(rows, v, base, score, lower, where={"edit": kind})
            cells.append(f"{wins}/{len(diffs)} ({np.mean(diffs):+.1f})" if diffs else "-")
        lines.append(f"| {text} ({score}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def job_config(job: Path, work: Path, model: Path, seed: int, v: Variant, args: argparse.Namespace, *more: str):
    info = json.loads((job / "case.json").read_text())
    caption = info["edited_caption"] if "@edited-caption" in v.extra else info["caption"]
    steps = args.steps * (2 if "@steps*2" in v.extra else 1)
    sets = [
        f"model.ckpt_path='{model}'", f"data.video='{job / 'source'}'", f"data.mask='{job / 'masks'}'",
        f"data.edited_frame='{job / 'edited_first.png'}'", f"data.caption={json.dumps(caption)}",
        f"data.edited_caption={json.dumps(info['edited_caption'])}",
        f"data.reference_frames='{job / 'reference' if v.reference else ''}'",
        f"data.cache_dir='{work / 'cache'}'", f"output_dir='{work / 'runs'}'", f"name='{job.name}-{v.name}-s{seed}'",
        f"seed={seed}", f"inference.steps={args.infer_steps}", f"inference.mask_preset='{v.preset}'",
        *([] if v.trigger else ["data.trigger=''"]), *(v.train or []),
        *(x for x in v.extra if not x.startswith("@")), *more,
    ]
    if args.steps_given or "@steps*2" in v.extra:
        sets.append(f"training.steps={steps}")
    if args.reference_steps is not None:
        sets.append(f"training.reference_steps={args.reference_steps}")
    return load_config(TOY_TOML, sets)


def case_job(case: world.EditCase, work: Path) -> Path:
    """The case's job folder, written once: into a temporary folder, then renamed, so that parallel shards
    never read a half-written frame."""
    job = work / "jobs" / f"clip{case.params.seed}"
    if not (job / "case.json").exists():
        job.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=job.parent, prefix=f".{job.name}-"))
        jobs.write_case(case, tmp)
        try:
            tmp.rename(job)
        except OSError:  # another shard finished it first
            shutil.rmtree(tmp)
    return job


def generate_frames(cfg, lora: Path | None) -> np.ndarray:
    from engine.infer.generate import LoraSpec, build_request, generate

    request = build_request(cfg, [LoraSpec(lora, 1.0)] if lora else [])
    return generate(cfg, request, progress=False).frames


def run_variant(job: Path, work: Path, model: Path, seed: int, v: Variant, args) -> np.ndarray:
    from engine.train.job import run_training

    cfg = job_config(job, work, model, seed, v, args)
    lora = run_training(cfg).lora if v.train is not None else None
    return generate_frames(cfg, lora)


@torch.no_grad()
def vae_frames(model: Path, clips: list[np.ndarray]) -> list[np.ndarray]:
    """uint8 [T, H, W, 3] clips through the toy VAE and back (the adapter's encode/decode)."""
    from datasets.samples import to_tensor
    from models.wan.adapter import WanAdapter

    adapter = WanAdapter(model, dtype=torch.float32)
    video = torch.stack([to_tensor(c) for c in clips])
    recon = torch.cat([adapter.decode_latents(adapter.encode_video(video[i:i + 8])) for i in range(0, len(video), 8)])
    return list(((recon + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy())


def vae_ceiling(model: Path, cases: list[world.EditCase]) -> float:
    """Reconstruction PSNR of the ground-truth edited clips through the toy VAE."""
    recon = np.stack(vae_frames(model, [c.edited for c in cases])).astype(np.float64)
    mse = float(((recon - np.stack([c.edited for c in cases])) ** 2).mean())
    return 10 * np.log10(255**2 / mse)


def kind_table(rows: list[dict], labels: dict[str, str], kinds: list[str]) -> str:
    """Whole-frame PSNR per variant and edit kind, and the default's wins over a and b per kind."""
    lines = ["| variant | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, label in labels.items():
        cells = []
        for k in kinds:
            vals = [r["whole_psnr"] for r in rows if r["variant"] == name and r["edit"] == k]
            cells.append(f"{np.mean(vals):.2f}" if vals else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for base in ("a", "b"):
        if base in labels and "default" in labels:
            cells = []
            for k in kinds:
                diffs, wins = toy_metrics.paired(rows, "default", base, "whole_psnr", False, {"edit": k})
                cells.append(f"{wins}/{len(diffs)} ({np.mean(diffs):+.2f} dB)" if diffs else "-")
            lines.append(f"| default better than {base} in | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> str:
    """results.json and table.md: the summary table, per-kind PSNR, the paired claims, the future-frame baseline."""
    s, rows, base_rows = report["settings"], report["rows"], report["baseline_rows"]
    base = {k: (np.mean([b[k] for b in base_rows]), np.std([b[k] for b in base_rows]))
            for k in ("base_model_psnr", "repeat_first_psnr")}
    gains = [b["base_model_psnr"] - b["repeat_first_psnr"] for b in base_rows]
    clips = sorted({r["clip"] for r in rows})
    table = (
        f"{len(clips)} held-out clips (world seeds {s['seeds']}, edits {s['edits']}) x {s['runs']} seeds; mean ± std "
        f"over the runs; frames 1..{report['frames'] - 1} against the exact ground truth; {s['infer_steps']} "
        f"sampling steps; training settings of examples/toy.toml unless the variant says otherwise.\n\n"
        + toy_metrics.markdown_table(report["summary"], report["labels"])
        + "\n\nWhole-frame PSNR (dB) by edit kind:\n\n" + kind_table(rows, report["labels"], report["kinds"])
        + "\n\nPaired differences (same clip, same seed):\n\n"
        + "\n".join(toy_metrics.paired_claims(rows, CLAIMS))
        + f"\n\nPer edit kind, the default ({DEFAULT}) and the recolor remedy ({RECOLOR}): runs where the claim holds"
        " / runs (mean paired difference):\n\n"
        + kind_claims_table(rows, report["kinds"])
        + f"\n\nFuture frames of the source clips (whole-frame PSNR, frames 1..T-1): base model "
        f"{base['base_model_psnr'][0]:.2f} ± {base['base_model_psnr'][1]:.2f} dB, repeat the first frame "
        f"{base['repeat_first_psnr'][0]:.2f} ± {base['repeat_first_psnr'][1]:.2f} dB: {np.mean(gains):+.2f} dB "
        f"(base model better in {sum(g > 0 for g in gains)}/{len(gains)} runs). VAE reconstruction of the "
        f"ground-truth clips (the ceiling): {report['vae_reconstruction_psnr']:.2f} dB.\n")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps(report, indent=1)), ("table.md", table)):
        write_atomic(out / name, text)
    return table


def parse_range(text: str) -> list[int]:
    """`A:B` (world seeds A..B-1), or a comma-separated list of seeds and ranges."""
    seeds = []
    for part in text.split(","):
        a, sep, b = part.strip().partition(":")
        try:
            seeds += range(int(a), int(b)) if sep else [int(a)]
        except ValueError:
            raise SystemExit(f"--seeds wants A:B (world seeds A..B-1) or a list like A,B,C:D; got {text!r}") from None
    return seeds


def load_rows(work: Path) -> dict[tuple, dict]:
    rows = {}
    for f in sorted(work.glob("rows*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["kind"], r["clip"], r["seed"], r.get("variant"))] = r
    return rows


def add_case_arguments(ap: argparse.ArgumentParser, seeds: str, runs: int, work: Path) -> None:
    """The arguments every toy benchmark shares: which held-out clips and edits, how many seeds, the training
    and sampling steps, the model, the work folder and the threads."""
    ap.add_argument("--seeds", default=seeds,
                    help="world seeds A:B of the held-out clips (B excluded), or a list: A,B,C:D")
    ap.add_argument("--edits", default=",".join(world.EDIT_KINDS), help="edit kinds, one per clip in turn")
    ap.add_argument("--runs", type=int, default=runs, help="training/sampling seeds per clip (0..N-1)")
    ap.add_argument("--steps", type=int, default=None, help="stage-1 LoRA steps (default: examples/toy.toml's)")
    ap.add_argument("--reference-steps", type=int, default=None, help="stage-2 steps (default: toy.toml's)")
    ap.add_argument("--infer-steps", type=int, default=20)
    ap.add_argument("--model", type=Path, default=REPO / "examples" / "toy" / "model")
    ap.add_argument("--work", type=Path, default=work, help="jobs, LoRAs, caches, rows")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TOY_THREADS", "1")))


def case_arguments(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    """Apply the shared arguments (threads, CPU DeepSpeed, toy.toml's steps unless given); the seeds and kinds."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    args.steps_given = args.steps is not None
    if args.steps is None:
        args.steps = load_config(TOY_TOML, check_paths=False).training.steps
    return parse_range(args.seeds), [k.strip() for k in args.edits.split(",") if k.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_case_arguments(ap, "1000000:1000012", 2, REPO / "runs" / "toy-ablation")
    ap.add_argument("--variants", default=",".join(BY_NAME), help="comma-separated, from: " + ", ".join(BY_NAME))
    ap.add_argument("--out", type=Path, default=REPO / "examples" / "toy" / "results")
    ap.add_argument("--shard", default="0/1", help="i/n: run every n-th run starting at i (parallel processes)")
    ap.add_argument("--report-only", action="store_true", help="write the report from --work's finished runs")
    args = ap.parse_args(argv)
    seeds, kinds = case_arguments(args)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    bad = [k for k in kinds if k not in world.EDIT_KINDS] + [n for n in names if n not in BY_NAME]
    if bad or not kinds or not names:
        raise SystemExit(f"unknown edit kind or variant: {', '.join(bad) or '(none given)'}")
    shard, nshards = (int(x) for x in args.shard.split("/"))
    variants = [BY_NAME[n] for n in names]
    model, work = args.model.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    cases = [world.edit_case(s, kinds[i % len(kinds)]) for i, s in enumerate(seeds)]
    done = load_rows(work)
    todo = [(case, seed, v) for case in cases for seed in range(args.runs) for v in [None, *variants]]
    rows_file = work / f"rows-{shard}.jsonl"
    slots = {"run": 0, "baseline": 0}  # shards split the baselines and the variant runs evenly, each on its own
    for n, (case, seed, v) in enumerate(todo):
        key = ("run" if v else "baseline", case.params.seed, seed, v.name if v else None)
        slot = slots[key[0]]
        slots[key[0]] += 1
        if args.report_only or key in done or slot % nshards != shard:
            continue
        job = case_job(case, work)
        t0 = time.perf_counter()
        if v is None:  # the base model predicting the *source* clip from its own first frame vs repeating it
            cfg = job_config(job, work, model, seed, BY_NAME["a"], args,
                             f"data.edited_frame='{job / 'source' / '00000.png'}'",
                             f"data.edited_caption={json.dumps(case.caption)}")
            pred = generate_frames(cfg, None)
            row = {"kind": "baseline", "clip": case.params.seed, "seed": seed, "edit": case.kind,
                   "base_model_psnr": toy_metrics.future_psnr(pred, case.source),
                   "repeat_first_psnr": toy_metrics.future_psnr(np.repeat(case.source[:1], len(pred), 0),
                                                                case.source)}
        else:
            truth, mask = jobs.read_truth(job)
            # The clip without the edited shape (other shapes drawn) and their masks: the color-blind motion score.
            without, others = world.render(dataclasses.replace(case.params, shapes=case.params.shapes[1:]))
            others = others.any(axis=0) if len(others) else np.zeros_like(mask)
            frames = run_variant(job, work, model, seed, v, args)
            (work / "frames").mkdir(exist_ok=True)
            np.save(work / "frames" / f"{case.params.seed}-{v.name}-s{seed}.npy", frames)
            row = {"kind": "run", "variant": v.name, "clip": case.params.seed, "seed": seed, "edit": case.kind,
                   **toy_metrics.score_edit(frames, truth, mask, without, others)}
        row["seconds"] = time.perf_counter() - t0
        with rows_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done[key] = row
        print(f"[{n + 1}/{len(todo)}] clip {case.params.seed} ({case.kind}) seed {seed} "
              f"{v.label if v else 'future-frame baseline'}: "
              + ", ".join(f"{k} {row[k]:.3g}" for k in row if isinstance(row[k], float)), flush=True)
    if nshards > 1 and not args.report_only:
        print(f"shard {shard}/{nshards} done; write the report with --report-only once every shard finished")
        return 0

    wanted = {(c.params.seed, s) for c in cases for s in range(args.runs)}
    rows = [r for r in done.values()
            if r["kind"] == "run" and r["variant"] in names and (r["clip"], r["seed"]) in wanted]
    base_rows = [r for r in done.values() if r["kind"] == "baseline" and (r["clip"], r["seed"]) in wanted]
    missing = len(wanted) * (len(variants) + 1) - len(rows) - len(base_rows)
    if missing:
        raise SystemExit(f"{missing} runs are not finished yet in {work}")
    labels = {v.name: v.label for v in variants}
    report = {"settings": {**{k: str(v) for k, v in vars(args).items()}, "edits": ",".join(kinds)},
              "seconds": time.perf_counter() - start, "vae_reconstruction_psnr": vae_ceiling(model, cases),
              "summary": toy_metrics.summarize(rows, "variant"), "labels": labels, "frames": world.FRAMES,
              "kinds": [k for k in world.EDIT_KINDS if any(c.kind == k for c in cases)],
              "rows": rows, "baseline_rows": base_rows}
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in report["kinds"]:  # one grid per edit kind: its first clip, seed 0
        case = next(c for c in cases if c.kind == kind)
        grid = [("source", case.source), ("ground truth", case.edited)] + [
            (v.label, np.load(work / "frames" / f"{case.params.seed}-{v.name}-s0.npy")) for v in variants]
        tmp = args.out / f".grid_{kind}.png.tmp"
        # 256 colours, no dithering: a third of the size for the committed results, no visible change here
        toy_metrics.image_grid(grid).quantize(256, dither=Image.Dither.NONE).save(tmp, format="PNG", optimize=True)
        tmp.replace(args.out / f"grid_{kind}.png")
    table = write_report(report, args.out)
    print(table)
    print(f"wrote {args.out}/results.json, table.md, grid_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
