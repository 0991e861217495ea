"""Benchmarks of the models on the CPU: training steps per second (forward, weighted
cross-entropy, backward, Adam, CyclicLR) and inference patches per second (eval, no_grad), for
the small configuration and the paper's U-Net/ResNet-50, on 6-band 256-px patches; plus the
FLOPs of one forward pass per patch (torch's FlopCounterMode), which the GPU estimate of the
full protocol uses (figures printed)."""

from __future__ import annotations

import os
import time

QUICK = bool(os.environ.get("LAMES_BENCH_QUICK"))
SIZE = 64 if QUICK else 256
BANDS = 6
TRAIN_BATCH = 2 if QUICK else 8
INFER_BATCH = 2 if QUICK else 16
STEPS = 1 if QUICK else 6


def _model(preset: str):
    import torch

    from lames_cube.ml.models import build_model

    torch.manual_seed(0)
    return build_model(preset, in_channels=BANDS, classes=2)


class TrainingSteps:
    """Optimiser steps per second of a batch of 8 patches (2 threads)."""

    params = ("small", "lames")
    param_names = ("model",)
    timeout = 1800

    def setup(self, preset):
        import torch

        from lames_cube.ml.training import make_scheduler

        torch.set_num_threads(2)
        self.model = _model(preset).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-5)
        self.sched = make_scheduler(self.opt)
        self.loss = torch.nn.CrossEntropyLoss(weight=torch.tensor([0.01, 1.0]))
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(TRAIN_BATCH, BANDS, SIZE, SIZE, generator=g)
        self.y = (torch.rand(TRAIN_BATCH, SIZE, SIZE, generator=g) > 0.9).long()

    def _step(self):
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()
        self.sched.step()

    def track_steps_per_second(self, preset):
        self._step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(STEPS):
            self._step()
        rate = STEPS / (time.perf_counter() - t0)
        print(f"train {preset}: {rate:.3f} steps/s = {rate * TRAIN_BATCH:.1f} patches/s "
              f"(batch {TRAIN_BATCH}, {BANDS} x {SIZE} x {SIZE}, 2 threads)")
        return rate

    track_steps_per_second.unit = "steps/s"


class InferencePatches:
    """Patches per second through the model in eval mode under no_grad, batches of 16."""

    params = ("small", "lames")
    param_names = ("model",)
    timeout = 1800

    def setup(self, preset):
        import torch

        torch.set_num_threads(2)
        self.model = _model(preset).eval()
        self.x = torch.randn(INFER_BATCH, BANDS, SIZE, SIZE,
                             generator=torch.Generator().manual_seed(0))

    def track_patches_per_second(self, preset):
        import torch

        with torch.no_grad():
            self.model(self.x)  # warm-up
            t0 = time.perf_counter()
            for _ in range(STEPS):
                self.model(self.x)
        rate = STEPS * INFER_BATCH / (time.perf_counter() - t0)
        print(f"infer {preset}: {rate:.1f} patches/s (batch {INFER_BATCH}, {BANDS} x {SIZE} "
              f"x {SIZE}, 2 threads)")
        return rate

    track_patches_per_second.unit = "patches/s"

    def track_gflops_per_patch(self, preset):
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            self.model(self.x[:1])
        gflops = counter.get_total_flops() / 1e9
        print(f"{preset}: {gflops:.2f} GFLOP per forward pass of one {BANDS} x {SIZE} x {SIZE} "
              f"patch")
        return gflops

    track_gflops_per_patch.unit = "GFLOP"
