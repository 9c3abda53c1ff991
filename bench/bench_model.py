"""Whole-model per-frame benchmarks, video mode (one source, batches of driving frames).

Every variant is timed beside the reference path fp32 per-frame step `model(source, driving)`
(the official per-frame work: source keypoints and encoder features recomputed each frame):

    reference_cached   reference modules with the source work done once (animator style)
    reference_compile  torch.compile(model) (default inductor mode), per frame
    fast_fp32 / fast_bf16 / fast_fp16     FastModel.render_frame(cache, driving)
    fast_fp32_graph / fast_bf16_graph     the same step replayed from a CUDA graph
    fast_bf16_compile_graph               torch.compile'd fast step inside a CUDA graph

extra_info holds per-frame ms and FPS, the speed-up vs the reference and (when measured in
the same session) vs reference_compile, and peak memory (CUDA). `bench_model_stages`
records a per-stage breakdown (motion estimator, each scale's motion and appearance
compensation, decoder) of the reference and of the fast path.

GPU: full model (random weights), 256x256, B = 1 and 8. Parameter ids containing "large"
(B = 8, compile variants) are skipped by `gpu_check.sh --quick`. CPU (`small`): a smoke run
of the small config at B = 1 and 2 without CUDA graphs or compile.
"""
from __future__ import annotations

import time

import pytest
import torch

import mcc_fast
from bench.harness import compare, synchronize
from mcc_fast.fast import FastModel
from mcc_fast.model import ModelConfig
from mcc_fast.model.generator.outputs import SourceFeatures
from mcc_fast.model.generator.warping import identity_grid, occlude, out_of_frame_tokens, warp
from mcc_fast.model.motion.keypoint_detector import Keypoints

VARIANTS = ["reference", "reference_cached", "reference_compile-large", "fast_fp32", "fast_bf16", "fast_fp16",
            "fast_fp32_graph", "fast_bf16_graph", "fast_bf16_compile_graph-large"]
BATCHES = [1, "8-large"]
_compiled_reference_ms: dict[int, float] = {}


def _batch(batch, small: bool) -> int:
    n = int(str(batch).split("-")[0])
    return min(n, 2) if small else n


@pytest.fixture(scope="module")
def setup(device, small):
    torch.manual_seed(0)
    config = ModelConfig.small(64) if small else ModelConfig()
    model = mcc_fast.Model(config).to(device).eval()
    size = config.image_size
    g = torch.Generator().manual_seed(1)
    source = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(device)
    driving = (torch.rand(8, 3, size, size, generator=g) * 2 - 1).to(device)
    return {"model": model, "source": source, "driving": driving, "fast": {}, "compiled": {}}


def _fast(setup, dtype) -> FastModel:
    if dtype not in setup["fast"]:
        setup["fast"][dtype] = FastModel(setup["model"], dtype=dtype)
    return setup["fast"][dtype]


def _reference_step(setup, n: int):
    model, source, driving = setup["model"], setup["source"].expand(n, -1, -1, -1), setup["driving"][:n]
    return lambda: model(source, driving)


def _reference_cached_step(setup, n: int):
    model, source, driving = setup["model"], setup["source"], setup["driving"][:n]
    me, gen = model.motion_estimator, model.generator
    with torch.no_grad():
        kp = me.keypoints(source)
        features = gen.encode_source(source)
    kp_n = Keypoints(kp.value.expand(n, -1, -1), kp.jacobian.expand(n, -1, -1, -1))
    features_n = SourceFeatures(tuple(f.expand(n, -1, -1, -1) for f in features.per_scale))
    source_n = source.expand(n, -1, -1, -1)
    return lambda: gen.render(features_n, me.dense_motion(source_n, kp_n, me.keypoints(driving)))


def _make_step(setup, variant: str, n: int):
    name = variant.split("-")[0]
    driving = setup["driving"][:n]
    if name == "reference":
        return _reference_step(setup, n)
    if name == "reference_cached":
        return _reference_cached_step(setup, n)
    if name == "reference_compile":
        if "model" not in setup["compiled"]:
            setup["compiled"]["model"] = torch.compile(setup["model"])
        compiled, source = setup["compiled"]["model"], setup["source"].expand(n, -1, -1, -1)
        return lambda: compiled(source, driving)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name.split("_")[1]]
    if "compile" in name:  # a separate FastModel whose step is compiled
        key = ("compiled", dtype)
        if key not in setup["fast"]:
            setup["fast"][key] = FastModel(setup["model"], dtype=dtype).compile(mode="max-autotune-no-cudagraphs")
        fast = setup["fast"][key]
    else:
        fast = _fast(setup, dtype)
    cache = fast.prepare_source(setup["source"])
    if name.endswith("graph"):
        graphed = fast.cuda_graph(cache, n, inputs="images")
        return lambda: graphed(driving, clone=False)
    return lambda: fast.render_frame(cache, driving)


def _check(name: str):
    def check(out, ref):
        assert out.shape == ref.shape and torch.isfinite(out).all()
        if "fp32" in name or name.startswith("reference"):
            assert (out.float() - ref.float()).abs().max().item() <= 1e-2  # TF32 on GPU
        else:
            mse = ((out.float().clamp(-1, 1) - ref.float().clamp(-1, 1)) ** 2).mean().item() / 4
            assert mse < 1e-2, f"half-precision frames too far from the reference (mse {mse:.2e})"
    return check


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("variant", VARIANTS)
def bench_model_frame(benchmark, device, small, setup, variant, batch):
    name = variant.split("-")[0]
    if small and ("graph" in name or "compile" in name):
        pytest.skip("CUDA graphs and torch.compile: GPU only (the CPU run is a smoke test)")
    n = _batch(batch, small)
    benchmark.group = f"model frame B={n}"
    with torch.no_grad():
        fn = _make_step(setup, variant, n)
        rounds = 3 if small else (20 if n == 1 else 8)
        compare(benchmark, fn, _reference_step(setup, n), device=device, check=_check(name), rounds=rounds)
    if getattr(benchmark, "disabled", False):
        return
    info = benchmark.extra_info
    median = info["median_s"]
    info.update(batch=n, per_frame_ms=median / n * 1e3, fps=n / median)
    if name == "reference_compile":
        _compiled_reference_ms[n] = median * 1e3
    elif n in _compiled_reference_ms:
        info["ratio_vs_reference_compile"] = _compiled_reference_ms[n] / (median * 1e3)


# ---- per-stage breakdown -------------------------------------------------------------------------

class _Stages:
    """Accumulates CUDA-synchronised wall time per stage name."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.totals, self.last = device, {}, None

    def start(self) -> None:
        synchronize(self.device)
        self.last = time.perf_counter()

    def mark(self, name: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + (now - self.last)
        self.last = now


def _reference_stages(model, source, driving, features, kp_source, timer: _Stages) -> None:
    me, gen = model.motion_estimator, model.generator
    cfg = gen.config
    n = driving.shape[0]
    timer.start()
    kp_s = Keypoints(kp_source.value.expand(n, -1, -1), kp_source.jacobian.expand(n, -1, -1, -1))
    motion = me.dense_motion(source.expand(n, -1, -1, -1), kp_s, me.keypoints(driving))
    timer.mark("motion estimator")
    grid = identity_grid(cfg.flow_size, driving.device)
    heat = gen.motion.query.heatmap_features(motion.driving_kp_heatmap)
    flow, occlusion, compensated = motion.deformation, motion.occlusion_map, []
    for k, feature in enumerate(f.expand(n, -1, -1, -1) for f in features.per_scale):
        warped_q = warp(feature, flow)
        displacement = (flow - grid) * cfg.displacement_scale
        tokens = gen.motion(k, displacement, gen.motion.query(k, warped_q, heat)).tokens
        d_flow, d_occ = gen.flow_updater(k, displacement.permute(0, 3, 1, 2), tokens, warped_q)
        flow = flow + d_flow / cfg.displacement_scale
        occlusion = torch.sigmoid(occlusion + d_occ)
        timer.mark(f"scale {k} motion")
        warped = occlude(warp(feature, flow), occlusion)
        occlude(warp(feature.detach(), flow), occlusion.detach())  # the reference's redundant warp
        compensated.append(gen.appearance(k, warped, out_of_frame_tokens(flow, cfg.token_grid)))
        timer.mark(f"scale {k} appearance")
    gen.decoder(compensated[0], lambda k, x: x if k >= len(compensated) else
                gen.fusions[str(k)](compensated[k], x, cfg.fusion_weight))
    timer.mark("decoder")


def _fast_stages(fast: FastModel, cache, driving, timer: _Stages) -> None:
    from mcc_fast import ops

    r, rt = fast.renderer, fast.runtime
    n = driving.shape[0]
    cache = cache.expanded(n)
    timer.start()
    flow, occlusion, heatmaps = r.dense_motion(cache.small_source, cache.keypoints, r.detector(driving))
    timer.mark("motion estimator")
    heat = r.motion.heatmap_features(heatmaps)
    compensated = []
    for k, feature in enumerate(cache.features):
        warped_q = rt.feature(ops.warp(feature, flow))
        displacement = (flow - r.grid) * r.pixels
        tokens = r.motion(k, warped_q, heat, displacement)
        d_flow, d_occ = r.updater(k, displacement.permute(0, 3, 1, 2), tokens, warped_q)
        flow = flow + d_flow / r.pixels
        occlusion = torch.sigmoid(occlusion + d_occ)
        timer.mark(f"scale {k} motion")
        warped = rt.feature(ops.warp(feature, flow, occlusion))
        compensated.append(r.appearance(k, warped, out_of_frame_tokens(flow, r.config.token_grid)))
        timer.mark(f"scale {k} appearance")
    r.decoder(compensated)
    timer.mark("decoder")


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"B{b}")
def bench_model_stages(benchmark, device, small, setup, batch):
    """Per-stage milliseconds per frame batch (eager, synchronised after each stage)."""
    n = _batch(batch, small)
    model, source, driving = setup["model"], setup["source"], setup["driving"][:n]
    benchmark.group = f"model stages B={n}"
    repeats = 1 if getattr(benchmark, "disabled", False) else (2 if small else 5)
    results = {}
    with torch.no_grad():
        features, kp_source = model.generator.encode_source(source), model.motion_estimator.keypoints(source)
        caches = {dt: _fast(setup, dt).prepare_source(source) for dt in (torch.float32, torch.bfloat16)}
        runs = {"reference": lambda t: _reference_stages(model, source, driving, features, kp_source, t)}
        for dt, label in ((torch.float32, "fast_fp32"), (torch.bfloat16, "fast_bf16")):
            runs[label] = lambda t, dt=dt: _fast_stages(_fast(setup, dt), caches[dt], driving, t)
        for label, run in runs.items():
            run(_Stages(device))  # warm-up
            timer = _Stages(device)
            for _ in range(repeats):
                run(timer)
            results[label] = {k: v / repeats * 1e3 for k, v in timer.totals.items()}
    # the table row times the fast fp32 stage run; the breakdown is in extra_info
    benchmark.pedantic(lambda: runs["fast_fp32"](_Stages(device)), rounds=1, iterations=1)
    if not getattr(benchmark, "disabled", False):
        benchmark.extra_info.update({"batch": n, "stages_ms": results,
                                     "totals_ms": {k: sum(v.values()) for k, v in results.items()}})
