"""Long clips at toy scale: chained windows against editing each window on its own, per window, exact truth.

    python -m benchmarks.long_clips                                   # README's table (5 kinds x 2 clips x 1 seed)
    python -m benchmarks.long_clips --seeds 1000000:1000010 --runs 2 --edits recolor,shape
    python -m benchmarks.long_clips --seeds 1000000 --runs 1 --edits recolor --steps 2 --infer-steps 2   # smoke

Each held-out clip of the toy world (examples/toy/world.py) is rendered `--frames` long (33: four windows of the
toy model's 9 frames; the shapes bounce inside the frame), one edit of shape 0 per clip, the kinds of `--edits` in
turn. One LoRA per clip and seed is trained on the long job (data.window = 9: the windows inference cuts plus
random ones; the toy's settings with every remedy off, as benchmarks.toy_ablation's variant c), then sampled:
  chain        chained windows, the carried frames as generated (inference.window_anchor = "generated")
  chain_anchor chained windows, the carried frames' kept region re-anchored on the source ("source")
  upper        each window on its own from the ground-truth edited frames it starts with (an upper bound)
  lower        each window on its own from the source's frames it starts with (a lower bound: the edit is lost)
  chain_ff     chain_anchor with a LoRA also trained on the edited first frame (training.first_frame_reference)
Scores per window over the frames it makes (window k: frames 8(k-1)+1 .. 8k), against the ground truth: whole-frame,
kept-region and edit-region PSNR, and the edit region's mean Lab color error. Writes results.json and table.md to
--out; finished runs are kept in --work/rows.jsonl, so a rerun skips them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import toy_ablation, toy_metrics  # noqa: E402
from config.atomic import write_atomic  # noqa: E402
from examples.toy import jobs, world  # noqa: E402

VARIANTS = {
    "chain": ("chained, carried frames as generated", "generated", None, False),
    "chain_anchor": ("chained, background re-anchored", "source", None, False),
    "chain_ff": ("chained, re-anchored + first-frame sample", "source", None, True),
    "upper": ("each window from the truth (upper bound)", "generated", "truth", False),
    "lower": ("each window from the source (lower bound)", "generated", "source", False),
}
SCORES = (("whole_psnr", "whole-frame PSNR dB", 2), ("kept_psnr", "kept-region PSNR dB", 2),
          ("edit_psnr", "edit-region PSNR dB", 2), ("color_error", "edit color error (Lab)", 1))


def long_config(job: Path, work: Path, model: Path, seed: int, args: argparse.Namespace, anchor: str, ff: bool):
    variant = toy_ablation.BY_NAME["c_ff" if ff else "c"]
    return toy_ablation.job_config(job, work, model, seed, variant, args, f"data.frames={args.frames}",
                                   f"data.window={world.FRAMES}", f"inference.window_anchor='{anchor}'")


def run_case(case: world.EditCase, seed: int, names: list[str], args, work: Path, model: Path) -> list[dict]:
    """Train the case's LoRA(s) once and sample every variant; one row per variant and window."""
    from engine.infer.chain import generate_chained
    from engine.infer.generate import LoraSpec, build_request
    from engine.train.job import run_training

    job = toy_ablation.case_job(case, work)
    truth, mask = jobs.read_truth(job)
    loras: dict[bool, Path] = {}
    rows = []
    for name in names:
        label, anchor, carried, ff = VARIANTS[name]
        t0 = time.perf_counter()
        cfg = long_config(job, work, model, seed, args, anchor, ff)
        if ff not in loras:
            loras[ff] = run_training(cfg).lora
        request = build_request(cfg, [LoraSpec(loras[ff], 1.0)])
        carried_from = {"truth": truth, "source": case.source, None: None}[carried]
        frames = generate_chained(cfg, request, progress=False, carried_from=carried_from).frames
        np.save(work / "frames" / f"{case.params.seed}-{name}-s{seed}.npy", frames)
        from datasets.windows import chain_windows

        for k, w in enumerate(chain_windows(len(truth), world.FRAMES, 1)):
            span = slice(w.start + w.head - 1, w.end)  # score_edit skips the first frame: the carried one
            scores = toy_metrics.score_edit(frames[span], truth[span], mask[span])
            rows.append({"variant": name, "clip": case.params.seed, "seed": seed, "edit": case.kind, "window": k + 1,
                         **{s: scores[s] for s, _, _ in SCORES}, "seconds": time.perf_counter() - t0})
    return rows


def later_windows(rows: list[dict], name: str, run: tuple[int, int], score: str) -> float:
    """Mean of `score` over windows 2.. of one variant's run (clip, seed)."""
    return float(np.nanmean([r[score] for r in rows if r["variant"] == name and (r["clip"], r["seed"]) == run
                             and r["window"] > 1]))


def table(rows: list[dict], names: list[str], windows: int) -> str:
    """One markdown table per score: a row per variant, a column per window, mean over clips and seeds."""
    out = []
    for score, title, digits in SCORES:
        out += [f"**{title}** per window (mean over runs; window k = frames {world.FRAMES - 1}(k-1)+1 .. "
                f"{world.FRAMES - 1}k)", "", "| variant | " + " | ".join(f"w{k}" for k in range(1, windows + 1))
                + " | all |", "|---|" + "---|" * (windows + 1)]
        for name in names:
            cells = []
            for k in [*range(1, windows + 1), None]:
                vals = [r[score] for r in rows if r["variant"] == name and (k is None or r["window"] == k)
                        and not np.isnan(r[score])]
                cells.append(f"{np.mean(vals):.{digits}f}" if vals else "-")
            out.append(f"| {VARIANTS[name][0]} | " + " | ".join(cells) + " |")
        out.append("")
    if "chain" in names:  # the remedies against plain chaining, paired by clip and seed, over windows 2..
        out.append("Paired with plain chaining (same clip and seed, windows 2 and later; runs where the variant is "
                   "better / runs):\n")
        for name in [n for n in names if n != "chain"]:
            cells = []
            for score, title, _ in SCORES[:3]:
                diffs = []
                for run in sorted({(r["clip"], r["seed"]) for r in rows if r["variant"] == name}):
                    diffs.append(later_windows(rows, name, run, score) - later_windows(rows, "chain", run, score))
                cells.append(f"{title.split(' PSNR')[0]} {np.mean(diffs):+.2f} dB ({sum(d > 0 for d in diffs)}/"
                             f"{len(diffs)})")
            out.append(f"- {VARIANTS[name][0]}: " + ", ".join(cells))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    toy_ablation.add_case_arguments(ap, "1000000:1000010", 1, REPO / "runs" / "long-clips")
    ap.add_argument("--variants", default="chain,chain_anchor,upper,lower", help="from: " + ", ".join(VARIANTS))
    ap.add_argument("--frames", type=int, default=33, help="clip length (the toy model's window is 9)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "long-clips" / "results")
    args = ap.parse_args(argv)
    seeds, kinds = toy_ablation.case_arguments(args)
    names = [n for n in args.variants.split(",") if n]
    bad = [k for k in kinds if k not in world.EDIT_KINDS] + [n for n in names if n not in VARIANTS]
    if bad or not kinds or not names or args.frames <= world.FRAMES:
        raise SystemExit(f"unknown edit kind or variant, or --frames not above {world.FRAMES}: {', '.join(bad)}")
    model, work = args.model.resolve(), args.work.resolve()
    (work / "frames").mkdir(parents=True, exist_ok=True)
    rows_file = work / "rows.jsonl"
    done = [json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()] if rows_file.exists() else []
    start = time.perf_counter()
    cases = [world.long_edit_case(s, kinds[i % len(kinds)], args.frames) for i, s in enumerate(seeds)]
    for case in cases:
        for seed in range(args.runs):
            have = {r["variant"] for r in done if r["clip"] == case.params.seed and r["seed"] == seed}
            todo = [n for n in names if n not in have]
            if not todo:
                continue
            rows = run_case(case, seed, todo, args, work, model)
            with rows_file.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            done += rows
            print(f"clip {case.params.seed} ({case.kind}) seed {seed}: " + ", ".join(
                f"{n} {np.mean([r['whole_psnr'] for r in rows if r['variant'] == n]):.2f} dB" for n in todo),
                flush=True)
    wanted = {(c.params.seed, s) for c in cases for s in range(args.runs)}
    rows = [r for r in done if (r["clip"], r["seed"]) in wanted and r["variant"] in names]
    windows = max(r["window"] for r in rows)
    text = (f"{len(cases)} held-out clips (world seeds {args.seeds}, edits {','.join(kinds)}), {args.frames} frames, "
            f"x {args.runs} seed(s); {args.infer_steps} sampling steps; LoRA: toy.toml's settings, every remedy off, "
            f"data.window = {world.FRAMES}; PSNR against the exact ground truth.\n\n" + table(rows, names, windows))
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    write_atomic(args.out / "results.json",
                 json.dumps({"settings": settings, "seconds": time.perf_counter() - start, "rows": rows}, indent=1))
    write_atomic(args.out / "table.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
