"""Encode once: each encoder runs once per distinct input, and no encoder is resident while training.

Builds a Wan2.1-I2V model larger than the test fixtures (a few hundred MB, so memory figures mean
something; the transformer is the biggest component, as in the real model), prepares a job whose
samples share prompts and images, and in ONE process, as train.py does:

  1. encodes the job (cold cache), counting each encoder's forward calls with hooks;
  2. encodes it again (warm cache): no encoder may load;
  3. trains: transformer + LoRA forward/backward + AdamW steps on the cached tensors.

It prints the calls per encoder against the number of distinct inputs, and the peak resident memory
(RSS, sampled every 2 ms) of each phase above the process's baseline, beside the components' sizes.

    python benchmarks/encode_once.py [--steps 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import PeakRSS, build_larger_tiny, mb, rss  # noqa: E402


def job_samples() -> list:
    """Four samples over one clip: two modes on the same window, two short clips; two prompts."""
    from datasets.samples import short_clip_samples, video_sample

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
    edit = np.zeros((17, 64, 64), bool)
    edit[:, 16:48, 16:48] = True
    return [video_sample(frames[:9], edit[:9], "p3rs0n, a box", "loraedit", name="loraedit"),
            video_sample(frames[:9], edit[:9], "p3rs0n, a box", "naive", name="naive"),
            *short_clip_samples(frames, edit, "p3rs0n, a box on a table", clip_frames=9, overlap=1)]


def distinct(tensors: list[torch.Tensor]) -> int:
    return len({(tuple(t.shape), t.numpy().tobytes()) for t in tensors})


def count_calls(adapter) -> Counter:
    """Count forward calls of each encoder as it is loaded (VAE: `encode` calls; it runs per time chunk)."""
    calls: Counter = Counter()
    weights = adapter.weights
    for name in ("vae", "text_encoder", "image_encoder"):
        loader = getattr(weights, name)

        def load(dtype, name=name, loader=loader):
            module = loader(dtype)
            if name == "vae":
                encode = module.encode
                module.encode = lambda *a, **k: calls.update(["vae"]) or encode(*a, **k)
            else:
                module.register_forward_hook(lambda *_, n=name: calls.update([n]))
            return module

        setattr(weights, name, load)
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps to measure (default 3)")
    parser.add_argument("--keep", type=Path, help="build the model here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)

    from engine.encode.cache import EncodeCache
    from engine.encode.samples import encode_samples
    from engine.train.flow import flow_loss, noisy_latents
    from models.lora import add_lora
    from models.wan.adapter import WanAdapter

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        model_dir = root / "wan-bench"
        t0 = time.time()
        build_larger_tiny(model_dir)
        print(f"benchmark model ready in {time.time() - t0:.0f}s: {model_dir}")
        sizes = {name: sum(f.stat().st_size for f in (model_dir / name).glob("*.safetensors"))
                 for name in ("transformer", "text_encoder", "image_encoder", "vae")}
        samples = job_samples()
        negative = "static, blurry"
        expected = {"vae": distinct([s.v_condition for s in samples] + [s.v_target for s in samples]),
                    "text_encoder": len({s.prompt for s in samples} | {negative}),
                    "image_encoder": distinct([s.clip_image for s in samples])}

        adapter = WanAdapter(model_dir, dtype=torch.float32)
        calls = count_calls(adapter)
        cache = EncodeCache(root / "cache")
        for p in cache.folder.glob("*.safetensors"):
            p.unlink()
        base = rss()
        with PeakRSS() as cold:
            encoded, _ = encode_samples(adapter, samples, cache, extra_prompts=[negative])
        after_cold = rss()
        first_calls = dict(calls)
        resident_after = sorted(k for k in adapter.components if k in ("vae", "text_encoder", "image_encoder"))

        calls.clear()
        with PeakRSS() as warm:
            encode_samples(adapter, samples, cache, extra_prompts=[negative])
        warm_calls = dict(calls)

        with PeakRSS() as train:
            model = adapter.load_transformer()
            params = add_lora(model, adapter.lora_target_modules(), 16, 16.0)
            opt = torch.optim.AdamW(params, lr=1e-4)
            for step in range(args.steps):
                s = encoded[step % len(encoded)]
                g = torch.Generator().manual_seed(step)
                x0 = s.latents[None]
                xs, target = noisy_latents(x0, torch.randn(x0.shape, generator=g), torch.rand(1, generator=g))
                pred = adapter.predict(adapter.transformer_input(xs, s.cond[None]), torch.rand(1) * 1000,
                                       s.conditioning())
                flow_loss(pred, target).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        in_training = sorted(adapter.components)

    print("\nencoder calls per distinct input (first run, cold cache; second run, warm cache)")
    print(f"  {'encoder':<14}{'distinct inputs':>16}{'calls, cold':>13}{'calls, warm':>13}")
    for name, n in expected.items():
        print(f"  {name:<14}{n:>16}{first_calls.get(name, 0):>13}{warm_calls.get(name, 0):>13}")
    print(f"  encoders resident after encoding: {resident_after or 'none'}; components while training: {in_training}")

    print("\npeak RSS above the baseline (" + mb(base).strip() + ") of each phase, one process")
    print(f"  {'phase':<34}{'peak RSS':>12}   weights (safetensors)")
    print(f"  {'encode, cold cache':<34}{mb(cold.peak - base):>12}   vae {mb(sizes['vae']).strip()}, text "
          f"{mb(sizes['text_encoder']).strip()}, image {mb(sizes['image_encoder']).strip()} (one at a time)")
    print(f"  {'  RSS left after encoding':<34}{mb(after_cold - base):>12}")
    print(f"  {'encode, warm cache':<34}{mb(warm.peak - base):>12}   (no encoder loaded)")
    print(f"  {'train (transformer + LoRA, ' + str(args.steps) + ' steps)':<34}{mb(train.peak - base):>12}   "
          f"transformer {mb(sizes['transformer']).strip()}")
    stayed = train.peak - base + sizes["text_encoder"] + sizes["image_encoder"] + sizes["vae"]
    print(f"  {'  + the encoders, had they stayed':<34}{mb(stayed):>12}   (computed, not measured)")
    ok = first_calls == {k: v for k, v in expected.items() if v} and not warm_calls and not resident_after
    verdict = "each encoder ran once per distinct input; none resident after caching" if ok else "MISMATCH"
    print("\nresult: " + verdict)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
