"""Read what the CLIs write: a job folder's edit.toml, its training runs and its generated results.

Nothing here imports the training or inference code: the page learns everything from files, so it
shows the same state whether a step ran from the page, from a terminal, or before a server restart.

  run folder   output_dir/name/<timestamp>/: config.toml, metrics.jsonl (one line per step), summary.json
               (at the end, or on a stop), lora*.safetensors, checkpoints/latest (resumable), and, when
               training previews are on, previews/previews.jsonl ({"step", "video", "sheet", "scores",
               "combined"} per line, the files beside it)
  result       infer.py's --out folder: result.mp4, side_by_side.mp4, result.json; evaluate.py adds
               evaluation.json and evaluation.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tomllib

from webui.workspace import PageError, inside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PageError(f"{path}: cannot read it ({e})") from None


def _jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of a file another process may be appending to (a torn last line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def _json(path: Path) -> dict | None:
    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return item if isinstance(item, dict) else None


@dataclass
class JobInfo:
    dir: Path
    cfg: dict

    @classmethod
    def read(cls, job_dir: Path) -> JobInfo:
        return cls(Path(job_dir), _toml(Path(job_dir) / "edit.toml"))

    def _path(self, value: str, default: str) -> Path:
        p = Path(value or default).expanduser()
        return (p if p.is_absolute() else self.dir / p).resolve()

    def section(self, name: str) -> dict:
        return self.cfg.get(name) or {}

    @property
    def run_name(self) -> str:
        return str(self.cfg.get("name") or "edit")

    @property
    def runs_dir(self) -> Path:
        return self._path(self.cfg.get("output_dir", ""), "runs") / self.run_name

    @property
    def cache_dir(self) -> Path:
        return self._path(self.section("data").get("cache_dir", ""), "cache")

    @property
    def results_dir(self) -> Path:
        return self._path(self.section("inference").get("out", ""), "results")

    @property
    def model(self) -> str:
        ckpt = self.section("model").get("ckpt_path", "")
        return str(self._path(ckpt, "")) if ckpt else ""

    def data(self, key: str, default: object = None) -> object:
        return self.section("data").get(key, default)

    @property
    def has_reference(self) -> bool:
        ref = self.data("reference_frames", "")
        return bool(ref) and any(self._path(ref, "").glob("*"))

    def outside(self, root: Path) -> list[str]:
        """The places this job writes to that lie outside `root` (the page refuses to run such a job)."""
        places = {"output_dir": self.runs_dir, "data.cache_dir": self.cache_dir, "inference.out": self.results_dir}
        return [f"{k} = {v}" for k, v in places.items() if not inside(v, root)]

    # ---------------------------------------------------------------------------------- runs and results
    def runs(self) -> list[RunInfo]:
        """Training runs, oldest first (run folders are named by their start time)."""
        if not self.runs_dir.is_dir():
            return []
        return [RunInfo(p) for p in sorted(self.runs_dir.iterdir()) if (p / "config.toml").is_file()]

    def results(self) -> list[Path]:
        """Folders holding a generated result.mp4, oldest first."""
        if not self.results_dir.is_dir():
            return []
        found = [p.parent for p in self.results_dir.glob("*/result.mp4")]
        if (self.results_dir / "result.mp4").is_file():  # infer.py's default --out
            found.append(self.results_dir)
        return sorted(found, key=lambda p: p.stat().st_mtime)


@dataclass
class RunInfo:
    path: Path

    @property
    def config(self) -> dict:
        return _toml(self.path / "config.toml")

    @property
    def metrics(self) -> list[dict]:
        return [m for m in _jsonl(self.path / "metrics.jsonl") if isinstance(m.get("step"), int)]

    @property
    def summary(self) -> dict | None:
        return _json(self.path / "summary.json")

    @property
    def total_steps(self) -> int:
        """Stage 1 steps, plus stage 2's when the run had reference frames (as train.py plans its stages)."""
        cfg = self.config
        t = cfg.get("training") or {}
        total = int(t.get("steps", 0))
        ref = (cfg.get("data") or {}).get("reference_frames", "")
        if ref and int(t.get("reference_steps", 0)) and Path(ref).is_dir() and any(Path(ref).iterdir()):
            total += int(t.get("reference_steps", 0))
        return total

    @property
    def step(self) -> int:
        m = self.metrics
        return int(m[-1]["step"]) if m else 0

    @property
    def resumable(self) -> bool:
        s = self.summary
        return (self.path / "checkpoints" / "latest").is_file() and not (s and not s.get("interrupted"))

    @property
    def finished(self) -> bool:
        s = self.summary
        return bool(s) and not s.get("interrupted") and bool(s.get("lora"))

    def loras(self) -> list[Path]:
        """The final LoRA first, then the stage and step files, newest step first."""
        files = sorted(self.path.glob("lora*.safetensors"), reverse=True)
        return sorted(files, key=lambda p: p.name != "lora.safetensors")

    def previews(self) -> list[dict]:
        """Training previews (previews/previews.jsonl); entries whose files are missing are left out."""
        folder = self.path / "previews"
        out = []
        for item in _jsonl(folder / "previews.jsonl"):
            files = {k: folder / str(item[k]) for k in ("video", "sheet") if item.get(k)}
            if isinstance(item.get("step"), int) and files and all(
                    f.is_file() and inside(f, folder) for f in files.values()):
                out.append({**item, **{k: str(f) for k, f in files.items()}})
        return out

    def state(self) -> str:
        s = self.summary
        if s is None:
            return "no summary (running, or ended without one)"
        if s.get("interrupted"):
            return f"stopped at step {s.get('steps')} (resumable)"
        return f"finished {s.get('steps')} steps, final loss {s.get('final_loss', float('nan')):.4f}"


def result_files(folder: Path) -> dict[str, Path]:
    """The files of one generated result that exist, by role."""
    names = {"video": "result.mp4", "side_by_side": "side_by_side.mp4", "settings": "result.json",
             "metrics": "evaluation.json", "plot": "evaluation.png"}
    return {k: folder / n for k, n in names.items() if (folder / n).is_file()}


def metrics_rows(evaluation: Path) -> list[list[object]]:
    """evaluate.py's means as table rows: metric, better, the source's own value, the result's."""
    data = _json(evaluation) or {}
    results = data.get("results") or []
    if not results:
        return []
    summary, source = results[0].get("summary") or {}, data.get("source") or {}
    rows = []
    for key, (label, better) in METRIC_LABELS.items():
        value = summary.get(key)
        if value is None:
            continue
        rows.append([label, better, _fmt(source.get(key)), _fmt(value)])
    return rows


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 and v else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


# evaluation.json's summary keys (evaluate.py), in the order of its printed table
METRIC_LABELS = {
    "psnr_kept": ("background PSNR, kept region (dB)", "higher"),
    "ssim_kept": ("background SSIM, kept region", "higher"),
    "psnr_full": ("PSNR, whole frame (dB)", "higher"),
    "ssim_full": ("SSIM, whole frame", "higher"),
    "delta_e": ("edit colour dE76 vs edited frame", "lower"),
    "hist_distance": ("edit Lab histogram distance", "lower"),
    "clip_region": ("edit CLIP similarity", "higher"),
    "warp_error": ("temporal warping error", "lower"),
    "warp_error_edit": ("warping error, edit region", "lower"),
    "clip_score": ("CLIP score", "higher"),
    "input_similarity": ("input similarity", "higher"),
}
