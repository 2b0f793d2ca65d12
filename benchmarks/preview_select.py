"""Do the training previews' scores find the better LoRA? Measured against the toy world's exact ground truth.

    nice -n 10 python -m benchmarks.preview_select                       # 5 kinds x 2 clips x 2 seeds (README)
    python -m benchmarks.preview_select --seeds 1000000:1000005 --runs 1 --steps 20 --reference-steps 10 --every 5

Every held-out clip (world seeds `--seeds`, the kinds of `--edits` in turn: benchmarks/toy_ablation.py's cases and
job folders) x `--runs` seeds trains examples/toy.toml as shipped (toy_ablation's `default` variant) with a preview
every `--every` steps and a LoRA file at each (training.save_every_n_steps), the ground truth given as
training.preview_truth (reported, never used to select). From each run's preview history:

* Spearman correlation between the combined score and the ground-truth whole-frame PSNR of the previews;
* the picked LoRA (best combined score: lora.safetensors) against the fixed-step LoRA (the last step, what a run
  without previews keeps), both generated with the full inference settings (`--infer-steps`) and scored against
  the truth (frames 1..T-1), with the dense schedule (`--every`) and with the default one (`auto`, a subset of it);
* early stopping with patience K (`--patience`), simulated on the same history with the trainer's own rule
  (engine.train.previews.early_stop_reason): the steps it saves and the PSNR of what it keeps.

Resumable: finished runs are kept in WORK/rows.jsonl. Prints the table and writes WORK/table.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import toy_ablation  # noqa: E402
from config.atomic import write_atomic  # noqa: E402
from engine.train.previews import AUTO_PREVIEWS, best_entry, early_stop_reason, schedule  # noqa: E402
from examples.toy import jobs, world  # noqa: E402


def spearman(x: list[float], y: list[float]) -> float | None:
    """Rank correlation (average ranks for ties); None when either side is constant."""
    def ranks(v: list[float]) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        order = v.argsort(kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r

    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def truth_psnr(frames: np.ndarray, truth: np.ndarray) -> float:
    """Whole-frame PSNR of frames 1..T-1 against the truth (pooled MSE, as evaluate.py's psnr_truth)."""
    mse = float(np.mean((frames[1:].astype(np.float64) - truth[1:].astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def full_psnr(cfg, lora: Path, truth: np.ndarray, memo: dict) -> float:
    """The LoRA generated with the job's inference settings, scored against the truth (memoized by file)."""
    if lora not in memo:
        memo[lora] = truth_psnr(toy_ablation.generate_frames(cfg, lora), truth)
    return memo[lora]


def lora_at(run: Path, step: int, total: int) -> Path:
    return run / ("lora_last.safetensors" if step == total else f"lora_step{step:06d}.safetensors")


def default_grid(total: int, every: int) -> int:
    """The default schedule's interval ('auto': AUTO_PREVIEWS per run) rounded to the dense grid's LoRA files."""
    return every * max(1, round(total / AUTO_PREVIEWS / every))


def analyse(cfg, run: Path, truth: np.ndarray, patiences: list[int], every: int) -> dict:
    history = [json.loads(x) for x in (run / "previews" / "previews.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    total = summary["steps"]
    last_stage_start = total - summary["stages"][-1]["steps"]
    memo: dict = {}
    row = {"previews": [{"step": h["step"], "combined": h["combined"], "truth": h["scores"]["psnr_truth"],
                         "scores": h["scores"]} for h in history],
           "spearman": spearman([h["combined"] for h in history], [h["scores"]["psnr_truth"] for h in history]),
           "total": total}
    row["fixed"] = full_psnr(cfg, lora_at(run, total, total), truth, memo)
    auto = set(schedule(default_grid(total, every), total))
    for name, subset in (("dense", history), ("auto", [h for h in history if h["step"] in auto])):
        best = best_entry(subset)
        row[f"pick_{name}"] = {"step": best["step"], "psnr": full_psnr(cfg, lora_at(run, best["step"], total), truth,
                                                                        memo)}
    for k in patiences:
        for name, subset in (("dense", history), ("auto", [h for h in history if h["step"] in auto])):
            seen = []
            stop = total
            for h in subset:
                seen.append(h)
                if early_stop_reason(seen, k, last_stage_start):
                    stop = h["step"]
                    break
            best = best_entry(seen)
            row[f"stop{k}_{name}"] = {"stop": stop, "saved": total - stop, "step": best["step"],
                                      "psnr": full_psnr(cfg, lora_at(run, best["step"], total), truth, memo)}
    return row


def table(rows: list[dict], patiences: list[int], every: int) -> str:
    rho = [r["spearman"] for r in rows if r["spearman"] is not None]
    grid = default_grid(rows[0]["total"], every)
    lines = [f"{len(rows)} runs of {rows[0]['total']} steps; previews every {every} steps (dense) and, as 'auto' "
             f"({AUTO_PREVIEWS} per run), every {grid} steps and the last. Spearman(combined score, "
             f"ground-truth whole-frame PSNR) across a run's previews: median {np.median(rho):+.2f}, mean "
             f"{np.mean(rho):+.2f}, positive in {sum(r > 0 for r in rho)}/{len(rho)} runs.", "",
             "| choice | PSNR dB (mean) | vs fixed step: better / worse / same | mean diff dB | median diff dB | "
             "steps saved (mean) |", "|---|---|---|---|---|---|"]
    fixed = np.array([r["fixed"] for r in rows])
    lines.append(f"| fixed step (the last) | {fixed.mean():.2f} | - | - | - | 0 |")
    choices = [(f"pick_{s}", f"picked ({s})") for s in ("dense", "auto")]
    choices += [(f"stop{k}_{s}", f"early stop K={k} ({s})") for k in patiences for s in ("dense", "auto")]
    for key, label in choices:
        vals = np.array([r[key]["psnr"] for r in rows])
        diff = vals - fixed
        saved = np.mean([r[key].get("saved", 0) for r in rows])
        lines.append(f"| {label} | {vals.mean():.2f} | {int((diff > 1e-9).sum())} / {int((diff < -1e-9).sum())} / "
                     f"{int((abs(diff) <= 1e-9).sum())} | {diff.mean():+.2f} | {np.median(diff):+.2f} | {saved:.0f} |")
    kinds = sorted({r["edit"] for r in rows})
    lines += ["", "Per edit kind (Spearman median; picked (auto) minus fixed, mean dB):", "",
              "| kind | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|",
              "| Spearman | " + " | ".join(
                  f"{np.median([r['spearman'] for r in rows if r['edit'] == k and r['spearman'] is not None]):+.2f}"
                  for k in kinds) + " |",
              "| picked - fixed | " + " | ".join(
                  f"{np.mean([r['pick_auto']['psnr'] - r['fixed'] for r in rows if r['edit'] == k]):+.2f}"
                  for k in kinds) + " |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    toy_ablation.add_case_arguments(ap, "1000000:1000010", 2, REPO / "runs" / "preview-select")
    ap.add_argument("--every", type=int, default=10, help="steps between previews (the dense schedule)")
    ap.add_argument("--patience", default="2,3", help="early-stopping patiences K to simulate")
    ap.add_argument("--shard", default="0/1", help="i/n: every n-th run from i (parallel processes)")
    ap.add_argument("--report-only", action="store_true",
                    help="redo the analysis of the finished runs (their run folders) and print the table")
    args = ap.parse_args(argv)
    seeds, kinds = toy_ablation.case_arguments(args)
    patiences = [int(k) for k in args.patience.split(",") if k]
    shard, nshards = (int(x) for x in args.shard.split("/"))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows_file = work / "rows.jsonl"
    done = {(r["clip"], r["seed"]): r for r in (json.loads(x) for x in rows_file.read_text().splitlines())} \
        if rows_file.is_file() else {}
    variant = toy_ablation.BY_NAME["default"]
    todo = [(world.edit_case(s, kinds[i % len(kinds)]), seed) for i, s in enumerate(seeds) for seed in range(args.runs)]
    for n, (case, seed) in enumerate(todo):
        if args.report_only and (case.params.seed, seed) in done:
            job = toy_ablation.case_job(case, work)
            cfg = toy_ablation.job_config(job, work, args.model.resolve(), seed, variant, args)
            old = done[(case.params.seed, seed)]
            done[(case.params.seed, seed)] = {**old, **analyse(cfg, Path(old["run"]), jobs.read_truth(job)[0],
                                                               patiences, args.every)}
            continue
        if args.report_only or (case.params.seed, seed) in done or n % nshards != shard:
            continue
        from engine.train.job import run_training

        t0 = time.perf_counter()
        job = toy_ablation.case_job(case, work)
        cfg = toy_ablation.job_config(job, work, args.model.resolve(), seed, variant, args,
                                      f"training.preview_every_n_steps={args.every}",
                                      f"training.save_every_n_steps={args.every}",
                                      f"training.preview_truth='{job / 'truth'}'")
        run = run_training(cfg).run_dir
        truth, _ = jobs.read_truth(job)
        row = {"clip": case.params.seed, "seed": seed, "edit": case.kind, "run": str(run),
               **analyse(cfg, run, truth, patiences, args.every), "seconds": time.perf_counter() - t0}
        with rows_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        done[(case.params.seed, seed)] = row
        print(f"[{n + 1}/{len(todo)}] clip {case.params.seed} ({case.kind}) seed {seed}: spearman "
              f"{row['spearman']}, fixed {row['fixed']:.2f} dB, picked {row['pick_auto']['psnr']:.2f} dB "
              f"(step {row['pick_auto']['step']}), {row['seconds']:.0f}s", flush=True)
    wanted = [(c.params.seed, s) for c, s in todo]
    rows = [done[k] for k in wanted if k in done]
    if len(rows) < len(wanted):
        print(f"{len(wanted) - len(rows)} runs not finished yet")
    if rows:
        text = table(rows, patiences, args.every)
        write_atomic(work / "table.md", text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
