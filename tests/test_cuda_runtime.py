"""The CUDA backend without the compiled module (mcc_fast.cuda.runtime): csrc/'s kernel headers
compiled by NVRTC at run time, launched through the driver API by Python mirrors of the .cu
launchers.

Without a GPU this checks everything but the launch itself: every kernel compiles with NVRTC
for sm_86 and sm_90, each launcher's parameter list matches the kernel's (PTX), the argument
structs match the C++ layout (g++ offsetof), the launch constants match the headers, the API
matches the compiled module's, the launch arithmetic, and the runtime selection. On a GPU
(`-m gpu`) the run-time kernels are compared with the compiled module and the torch reference.
"""
from __future__ import annotations

import ctypes
import inspect
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import mcc_fast.cuda as mcuda
from mcc_fast.cuda import runtime
from mcc_fast.cuda.runtime import dense_motion as rt_dense_motion
from mcc_fast.cuda.runtime import launch, nvrtc
from mcc_fast.cuda.runtime import vq as rt_vq
from mcc_fast.cuda.runtime import warp as rt_warp

CSRC = Path(__file__).resolve().parents[1] / "csrc"
needs_nvrtc = pytest.mark.skipif(nvrtc.unavailable_reason() is not None,
                                 reason=f"needs libnvrtc (the test extra installs it): {nvrtc.unavailable_reason()}")


# ----------------------------------------------------------------------------- sources and compilation
def test_installed_sources_are_the_repository_csrc():
    assert launch.source_dir().is_dir()
    for family in runtime.FAMILIES.values():
        assert (launch.source_dir() / family.header).is_file()
    names = {p.name for p in launch.source_files()}
    assert names == {p.name for p in launch.source_files(CSRC)}
    assert {"device_common.cuh", "kernel_types.h", "warp_types.h", "vq_search_types.h"} <= names


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_75", "sm_86", "sm_90"])  # sm_75: the VQ tensor-core variants fall back to FMA
@pytest.mark.parametrize("family", sorted(runtime.FAMILIES))
def test_every_kernel_compiles_to_a_cubin_with_nvrtc(family, arch):
    fam = runtime.FAMILIES[family]
    compiled = fam.compile(arch)
    assert compiled.is_cubin
    assert compiled.image[:4] == b"\x7fELF"  # cubins are ELF images
    assert sorted(compiled.lowered) == sorted(fam.name_expressions())
    assert len(set(compiled.lowered.values())) == len(compiled.lowered)
    assert "warning" not in compiled.log.lower(), compiled.log


def _small_family() -> launch.Family:
    return launch.Family(rt_dense_motion.FAMILY.header, {"heatmaps": rt_dense_motion.FAMILY.kernels["heatmaps"]})


@needs_nvrtc
def test_compiled_images_are_cached_on_disk(tmp_path, monkeypatch):
    from mcc_fast.cuda.runtime import cache

    monkeypatch.setenv("MCC_FAST_CACHE_DIR", str(tmp_path / "cache"))
    first = _small_family().compile("compute_90")
    records = sorted((tmp_path / "cache" / "nvrtc").glob("*.json"))
    assert len(records) == 1 and records[0].with_suffix(".bin").read_bytes() == first.image

    def no_compiler(*args, **kwargs):
        raise AssertionError("NVRTC ran although the image is cached")

    monkeypatch.setattr(nvrtc, "compile_program", no_compiler)
    again = _small_family().compile("compute_90")  # a new process would start like this
    assert (again.image, again.lowered, again.is_cubin) == (first.image, first.lowered, first.is_cubin)
    # a damaged image is not trusted: compiled again and rewritten
    records[0].with_suffix(".bin").write_bytes(b"garbage")
    monkeypatch.undo()
    monkeypatch.setenv("MCC_FAST_CACHE_DIR", str(tmp_path / "cache"))
    assert _small_family().compile("compute_90").image == first.image
    assert records[0].with_suffix(".bin").read_bytes() == first.image
    # an unwritable cache folder only costs the compile; MCC_FAST_NVRTC_CACHE=0 writes nothing
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MCC_FAST_CACHE_DIR", str(tmp_path / "file"))
    assert _small_family().compile("compute_90").image == first.image
    monkeypatch.setenv("MCC_FAST_CACHE_DIR", str(tmp_path / "off"))
    monkeypatch.setenv("MCC_FAST_NVRTC_CACHE", "0")
    assert cache.cache_dir() is None
    assert _small_family().compile("compute_90").image == first.image
    assert not (tmp_path / "off").exists()


@needs_nvrtc
def test_kernels_compile_against_the_cuda_headers_triton_ships(monkeypatch):
    """A machine with torch and Triton but no CUDA toolkit: Triton's copy of the headers is enough."""
    import triton

    include = Path(triton.__file__).parent / "backends" / "nvidia" / "include"
    if not (include / "mma.h").is_file():
        pytest.skip("this Triton ships no CUDA headers")
    monkeypatch.setattr(launch, "cuda_include_dirs", lambda: [str(include)])
    monkeypatch.setenv("MCC_FAST_NVRTC_CACHE", "0")
    for family in runtime.FAMILIES.values():
        fresh = launch.Family(family.header, family.kernels)
        assert f"-I{include}" in fresh.options("sm_90")
        assert fresh.compile("sm_90").is_cubin


def _ptx_params(ptx: str, mangled: str) -> list[str]:
    start = ptx.index(f".entry {mangled}(")
    body = ptx[start:ptx.index(")", start)]
    out = []
    for line in body.splitlines()[1:]:
        m = re.match(r"\s*\.param\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+\S+?(?:\[(\d+)\])?,?$", line)
        assert m, line
        align, typ, size = m.groups()
        out.append(f".align {align} .b8[{size}]" if size else f".{typ}")
    return out


def _expected_param(typ) -> str:
    if isinstance(typ, type) and issubclass(typ, ctypes.Structure):
        return f".align {ctypes.alignment(typ)} .b8[{ctypes.sizeof(typ)}]"
    return {launch.PTR: ".u64", launch.I64: ".u64", launch.I32: ".u32", launch.F32: ".f32", launch.BOOL: ".u8"}[typ]


@needs_nvrtc
@pytest.mark.parametrize("family", sorted(runtime.FAMILIES))
def test_launcher_parameter_lists_match_the_kernels(family):
    """The PTX of every kernel has exactly the parameters (count, order, size, alignment) that
    the Python launcher packs: a mismatch here would be a silent wrong launch on a GPU."""
    fam = runtime.FAMILIES[family]
    compiled = fam.compile("compute_90")
    ptx = compiled.image.rstrip(b"\0").decode()
    for key, kernel in fam.kernels.items():
        want = [_expected_param(t) for t in kernel.params]
        for expr in kernel.expressions():
            assert _ptx_params(ptx, compiled.lowered[expr]) == want, (key, expr)


def _layout_program(header: str, struct: str, fields: list[str]) -> str:
    """C++ that prints sizeof(struct) and offsetof(struct, field) for each field."""
    prog = [f'#include "{header}"', "#include <cstddef>", "#include <cstdio>", "int main() {",
            f'  std::printf("sizeof %zu\\n", sizeof(mcc::{struct}));']
    prog += [f'  std::printf("{f} %zu\\n", offsetof(mcc::{struct}, {f}));' for f in fields]
    prog += ["}"]
    return "\n".join(prog)


def test_argument_structs_match_the_cpp_layout(tmp_path):
    """ctypes mirrors of SegArgs and SampleGeometry: every field at the C++ offset, same size."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("needs g++")
    for header, struct, mirror in (("vq_search_types.h", "SegArgs", rt_vq.SegArgs),
                                   ("warp_types.h", "SampleGeometry", rt_warp.SampleGeometry)):
        fields = [f for f, _ in mirror._fields_]
        src = tmp_path / f"{struct}.cpp"
        src.write_text(_layout_program(header, struct, fields))
        exe = tmp_path / struct
        proc = subprocess.run([gxx, "-std=c++17", f"-I{CSRC}", str(src), "-o", str(exe)], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        cpp = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                           check=True).stdout.splitlines())
        assert int(cpp.pop("sizeof")) == ctypes.sizeof(mirror), struct
        assert {f: int(v) for f, v in cpp.items()} == {f: getattr(mirror, f).offset for f in fields}, struct


def _constexpr(header: str, name: str) -> int:
    m = re.search(rf"constexpr\s+int\s+{name}\s*=\s*(\d+)\s*;", (CSRC / header).read_text())
    assert m, f"{name} not found in {header}"
    return int(m.group(1))


def test_launch_constants_match_the_kernel_headers():
    assert rt_vq.ROWS == _constexpr("vq_search_kernels.cuh", "kRows")
    assert rt_vq.THREADS == _constexpr("vq_search_kernels.cuh", "kThreads")
    assert rt_vq.CHUNK == _constexpr("vq_search_kernels.cuh", "kChunk")
    assert rt_vq.MAX_SEGMENTS == _constexpr("vq_search_types.h", "kVqMaxSegments")
    assert rt_warp.THREADS == _constexpr("warp_kernels.cuh", "kThreads")
    assert rt_warp.CHANNELS_PER_THREAD == _constexpr("warp_kernels.cuh", "kChannelsPerThread")
    shift = re.search(r"kIndex32Limit = I64\{1\} << (\d+);", (CSRC / "warp_kernels.cuh").read_text())
    assert shift and rt_warp.INDEX32_LIMIT == 2 ** int(shift.group(1))
    assert rt_dense_motion.THREADS == _constexpr("dense_motion_kernels.cuh", "kThreads")
    # the .cu launchers' literal block shapes, mirrored in the Python launchers
    vq_cu = (CSRC / "vq_search.cu").read_text()
    assert "256, 0, st>>>" in vq_cu and "dim3(32, 8)" in vq_cu and "128, 0, st>>>" in vq_cu


def test_runtime_module_has_the_compiled_module_api():
    """Same names, and the same parameter names in the same order, as mcc_fast._cuda."""
    compiled, err = mcuda._compiled()
    if compiled is None:
        pytest.skip(f"the compiled module is not built here: {err}")
    rt = runtime.module()
    for name in (n for n in dir(compiled) if not n.startswith("_")):
        assert hasattr(rt, name), name
        ref = getattr(compiled, name)
        if callable(ref) and not isinstance(ref, type):
            sig = ref.__doc__.splitlines()[0]
            want = re.findall(r"(\w+):", sig[sig.index("(") + 1:sig.rindex(")")])
            assert list(inspect.signature(getattr(rt, name)).parameters) == want, name
        elif not isinstance(ref, type) and name != "architectures":
            assert getattr(rt, name) == ref, name
    geometry = rt.SampleGeometry()
    reference = compiled.SampleGeometry()
    for field, _ in rt_warp.SampleGeometry._fields_:  # same defaults
        value = getattr(geometry, field)
        assert (list(value) if isinstance(value, ctypes.Array) else value) == pytest.approx(getattr(reference, field))


# ----------------------------------------------------------------------------- launch arithmetic (no GPU)
@pytest.fixture
def launches(monkeypatch):
    """Records every launch (and packs its arguments) instead of running it."""
    seen = []

    def record(self, kernel, grid, block, stream, *args, dtype=None):
        spec = self.kernels[kernel]
        spec.expression(dtype)
        packed = spec.pack(args)
        seen.append((kernel, grid, block, stream, packed, dtype))

    monkeypatch.setattr(launch.Family, "launch", record)
    return seen


def test_vq_forward_orders_segments_and_sizes_the_grids(launches):
    rt_vq.vq_search_forward([1000, 2000], [64, 64], [1, 1], [100, 130], [0, 512], [512, 1024], 3000, 64, 1, 1536, 64,
                            0, 4000, 5000, 6000, 1, 0, 0.25, 7000, 8000, 9000, 10000, 11000, 12000, 13000, 77)
    names = [k for k, *_ in launches]
    assert names == ["sq_norms", "search_fused", "finalize"]
    _, grid, block, stream, packed, dtype = launches[0]
    assert (grid, block, stream, dtype) == ((1536 + 7) // 8, 256, 77, 0)
    assert [p.value for p in packed[3:6]] == [0, 1536, 64]  # lo, hi, d
    a = launches[1][4][0]
    assert a.nseg == 2 and list(a.out[:2]) == [1, 0]  # more codes first
    assert list(a.pstart[:3]) == [0, 3, 5]  # ceil(130/64) = 3 blocks, then ceil(100/64) = 2
    assert list(a.z[:2]) == [2000, 1000] and list(a.start[:2]) == [512, 0]
    assert list(a.row_base[:2]) == [100, 0] and list(a.cnt_base[:2]) == [512, 0]
    assert launches[1][1] == 5 and launches[1][2] == rt_vq.THREADS
    assert launches[2][1] == 2  # one finalize block per segment
    with pytest.raises(ValueError, match="between 1 and 4 segments"):
        rt_vq.vq_search_forward([1] * 5, [1] * 5, [1] * 5, [1] * 5, [0] * 5, [1] * 5, 0, 1, 1, 5, 4, 0, 0, 0, 0, 0,
                                0, 0.25, 0, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="differ in length"):
        rt_vq.vq_search_forward([1, 2], [1], [1, 1], [1, 1], [0, 0], [1, 1], 0, 1, 1, 1, 4, 0, 0, 0, 0, 0, 0, 0.25,
                                0, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("dtype,precision,kernel", [
    (torch.float32, "tf32", "search_fused_tc"), (torch.float32, "ieee", "search_fused"),
    (torch.float32, "tf32x3", "search_fused"), (torch.bfloat16, "ieee", "search_fused_tc"),
    (torch.float16, "tf32", "search_fused_tc")])
def test_vq_wrapper_puts_the_search_on_tensor_cores(launches, monkeypatch, dtype, precision, kernel):
    """fp16/bf16, and fp32 with TF32 allowed: the wmma kernel; fp32 "ieee"/"tf32x3": fp32 FMA."""
    import contextlib

    from mcc_fast.cuda import vq as cuda_vq

    monkeypatch.setattr(cuda_vq, "extension", lambda kind=None, device=None: runtime.module())
    monkeypatch.setattr(cuda_vq, "current_stream", lambda t: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    z, cb = torch.zeros(10, 8, dtype=dtype), torch.zeros(16, 8, dtype=dtype)
    cuda_vq.search([cuda_vq.Segment(z, 0, 16)], cb, fused=True, precision=precision)
    assert [k for k, *_ in launches] == ["sq_norms", kernel, "finalize"]


def test_vq_backward_launches(launches):
    rt_vq.vq_backward_rows([1, 2], [8, 8], [1, 1], [3, 0], [8, 0], [1, 0], [17, 8], 9, 8, 1, 8, 2, 10, 11, 0.25, 12,
                           0, 13, 5)
    (name, grid, block, _, packed, dtype), = launches
    assert (name, grid, block, dtype) == ("backward_rows", 3 + 1, (32, 8), 2)
    assert packed[-1].value == 0  # atomic off: no codebook accumulator
    launches.clear()
    rt_vq.vq_codebook_grad_sorted([1, 2], [8, 8], [1, 1], [200, 100], 9, 8, 1, 1024, 300, 1, 3, 4, 5, 6, 7, 8, 9, 10,
                                  5)
    assert [(k, g, b) for k, g, b, *_ in launches] == [("segsum_chunks", (3, 3), 128), ("segsum_finish", (1024, 3), 128)]


def test_warp_launchers_size_the_grids(launches):
    g = rt_warp.SampleGeometry()
    g.B, g.C, g.H, g.W, g.M, g.Ho, g.Wo = 2, 10, 8, 8, 1, 16, 16
    g.out_strides = [2560, 0, 1, 160, 10]  # channels-last output
    rt_warp.sample_forward(1, 2, 0, 3, g, 1, 9)
    (name, grid, block, _, packed, dtype), = launches
    groups = 3  # ceil(10 / 4)
    assert (name, grid, block, dtype) == ("forward", 2 * 256 * groups // 256, 256, 1)
    assert packed[4] is g and packed[5].value == groups and packed[6].value is True
    launches.clear()
    rt_warp.sample_forward(1, 2, 0, 3, rt_warp.SampleGeometry(), 0, 9)  # empty: no launch
    assert not launches
    big = rt_warp.SampleGeometry()  # 2^30 work items: the 64-bit index kernels
    big.B, big.C, big.H, big.W, big.M, big.Ho, big.Wo = 1, 4, 8, 8, 1, 2**15, 2**15
    rt_warp.sample_forward(1, 2, 0, 3, big, 0, 9)
    rt_warp.gather_input_grad(1, 2, 3, 4, 4, big, 5, [1, 1, 1, 1], 0, 9)  # 4 entries x 2^30 pixels
    assert [k for k, *_ in launches] == ["forward_i64", "gather_i64"]
    with pytest.raises(ValueError, match="grad_occ needs M == 1"):
        g.M = 2
        rt_warp.sample_backward(1, 2, 3, 4, g, 5, [1, 1, 1, 1], 6, 7, 0, 0, 0, 9)
    with pytest.raises(ValueError, match="entries must be 1 or 4"):
        rt_warp.gather_input_grad(1, 2, 3, 2, 4, g, 5, [1, 1, 1, 1], 0, 9)


def test_dense_motion_launchers_check_sizes(launches):
    rt_dense_motion.compose_flow_backward(1, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 2, 11, 64, 64, 0, 4, 5, 6, 7, 8, 9, True,
                                          10, 16, 3)
    (name, grid, block, *_), = launches
    assert (name, grid, block) == ("compose_bwd", (16, 11, 2), 256)
    with pytest.raises(ValueError, match="num_blocks must be"):
        rt_dense_motion.compose_flow_backward(1, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 2, 11, 64, 64, 0, 4, 5, 6, 7, 8, 9,
                                              True, 10, 15, 3)
    with pytest.raises(ValueError, match="sizes out of range"):
        rt_dense_motion.keypoint_heatmaps_forward(1, 70000, 10, 8, 8, 0.01, 0, 2, 3)


def test_kernel_pack_rejects_a_wrong_argument_count():
    with pytest.raises(TypeError, match="arguments expected"):
        rt_warp.FAMILY.kernels["forward"].pack((1, 2))
    with pytest.raises(ValueError, match="dtype code"):
        rt_warp.FAMILY.kernels["forward"].expression(7)


# ----------------------------------------------------------------------------- choosing the runtime
def test_runtime_selection(monkeypatch):
    monkeypatch.setenv("MCC_FAST_CUDA_RUNTIME", "bogus")
    with pytest.raises(ValueError, match="MCC_FAST_CUDA_RUNTIME"):
        mcuda.requested_runtime()
    monkeypatch.setenv("MCC_FAST_CUDA_RUNTIME", "NVRTC")
    assert mcuda.requested_runtime() == "nvrtc"
    with mcuda.using("compiled"):
        assert mcuda.requested_runtime() == "compiled"
    with pytest.raises(ValueError, match="kind must be one of"), mcuda.using("cupy"):
        pass


def test_auto_falls_back_to_nvrtc_and_names_both_reasons(monkeypatch):
    fake = object()
    monkeypatch.setattr(mcuda, "_compiled", lambda: (None, "no compiled module"))
    monkeypatch.setattr(mcuda, "_nvrtc", lambda: (fake, None))
    assert mcuda.extension("auto") is fake
    monkeypatch.setattr(mcuda, "_nvrtc", lambda: (None, "no nvrtc"))
    with pytest.raises(RuntimeError, match="no compiled module; and no nvrtc"):
        mcuda.extension("auto")
    assert mcuda.runtime_name("auto") is None


class _CompiledWithoutImage:
    """A compiled module whose kernels have no image for the device (e.g. built for sm_86/sm_90, run on sm_80)."""

    architectures = "86-real,90-real,90-virtual"

    def kernel_image_error(self):
        return "cudaErrorNoKernelImageForDevice: no kernel image is available for execution on the device"


def _clear_probe_cache():
    if hasattr(mcuda, "_image_error"):
        mcuda._image_error.cache_clear()


def _pretend_gpu(monkeypatch, capability=(8, 0)):
    import contextlib

    _clear_probe_cache()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)


def test_a_compiled_module_that_cannot_run_on_the_gpu_falls_back_to_nvrtc(monkeypatch):
    """A default build (sm_86, sm_90 SASS + compute_90 PTX) on an A100, or one whose static
    runtime needs a newer driver: the backend must not pick it and fail at every launch."""
    from mcc_fast._dispatch import cuda_status

    fake_nvrtc = type("Nvrtc", (), {"runtime": "nvrtc"})()
    _pretend_gpu(monkeypatch)
    monkeypatch.setattr(mcuda, "_compiled", lambda: (_CompiledWithoutImage(), None))
    monkeypatch.setattr(mcuda, "_nvrtc", lambda: (fake_nvrtc, None))
    try:
        assert mcuda.extension("auto") is fake_nvrtc
        assert mcuda.runtime_name("auto") == "nvrtc"
        reason = mcuda.extension_error("compiled")
        assert "cannot run on cuda:0" in reason and "8.0" in reason and "no kernel image" in reason
        with pytest.raises(RuntimeError, match="no kernel image"):
            mcuda.extension("compiled")
        status = cuda_status()
        assert status.available and "NVRTC" in status.reason and "no kernel image" in status.reason
        monkeypatch.setattr(mcuda, "_nvrtc", lambda: (None, "no nvrtc"))
        with pytest.raises(RuntimeError, match="no kernel image.*; and no nvrtc"):
            mcuda.extension("auto")
        assert not cuda_status().available
    finally:
        _clear_probe_cache()


def test_a_compiled_module_that_runs_on_the_gpu_is_used(monkeypatch):
    compiled = _CompiledWithoutImage()
    compiled.kernel_image_error = lambda: None
    _pretend_gpu(monkeypatch, (9, 0))
    monkeypatch.setattr(mcuda, "_compiled", lambda: (compiled, None))
    monkeypatch.setattr(mcuda, "_nvrtc", lambda: pytest.fail("nvrtc must not be loaded"))
    try:
        assert mcuda.extension("auto") is compiled
        assert mcuda.extension_error("compiled") is None
    finally:
        _clear_probe_cache()


class _CompiledForOneDevice(_CompiledWithoutImage):
    """Kernels with an image for cuda:0 only (e.g. an sm_90 and an sm_80 GPU in one machine);
    records the device each probe ran on."""

    def __init__(self):
        self.current, self.probed = 0, []

    def kernel_image_error(self):
        self.probed.append(self.current)
        return None if self.current == 0 else super().kernel_image_error()


def _pretend_two_gpus(monkeypatch, compiled):
    import contextlib

    @contextlib.contextmanager
    def device(d):
        before, compiled.current = compiled.current, int(d)
        try:
            yield
        finally:
            compiled.current = before

    _pretend_gpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(mcuda, "_compiled", lambda: (compiled, None))
    monkeypatch.setattr(mcuda, "_nvrtc", lambda: (type("Nvrtc", (), {"runtime": "nvrtc"})(), None))


def test_the_probe_asks_the_tensors_gpu_not_the_current_one(monkeypatch):
    """Tensors on cuda:1 while cuda:0 is current: the backend must check that the kernels run on
    cuda:1 (and make no CUDA context on cuda:0), in the dispatch and in the wrappers."""
    import mcc_fast._dispatch as dispatch

    compiled = _CompiledForOneDevice()
    _pretend_two_gpus(monkeypatch, compiled)
    monkeypatch.setattr(dispatch, "_device_of", lambda tensors: torch.device("cuda", 1))
    try:
        assert dispatch.resolve_backend(None, torch.zeros(1), op="t") == "cuda"
        assert compiled.probed == [1]
        assert "NVRTC" in dispatch.cuda_status(torch.device("cuda", 1)).reason
        assert mcuda.runtime_name(device=torch.device("cuda", 1)) == "nvrtc"
        assert mcuda.extension(device="cuda:0") is compiled
        assert mcuda.extension() is compiled  # the current device, cuda:0
    finally:
        _clear_probe_cache()


@pytest.mark.parametrize("family, call", [
    ("warp", lambda m, t: m.grid_sample_forward(t, t, 0, 0, False)),
    ("warp", lambda m, t: m.warp_forward(t, t, None, False)),
    ("dense_motion", lambda m, t: m.keypoint_heatmaps(t, 2, 2, 0.01, torch.float32)),
])
def test_the_wrappers_load_the_kernels_for_their_tensors_device(monkeypatch, family, call):
    import importlib

    wrappers = importlib.import_module(f"mcc_fast.cuda.{family}")
    asked = []

    def extension(kind=None, device=None):
        asked.append(device)
        raise _Stop

    monkeypatch.setattr(wrappers, "extension", extension)
    tensor = type("OnGpu1", (), {"device": torch.device("cuda", 1)})()
    with pytest.raises(_Stop):
        call(wrappers, tensor)
    assert asked == [torch.device("cuda", 1)]


class _Stop(Exception):
    pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_the_cuda_backend_says_why():
    from mcc_fast._dispatch import cuda_status

    status = cuda_status()
    assert not status.available and status.reason
    from mcc_fast.cuda.runtime import driver

    with mcuda.using("nvrtc"):
        reason = mcuda.extension_error()
    if driver.unavailable_reason():  # no GPU driver here: the run-time path names it
        assert "libcuda.so.1" in reason
        with mcuda.using("nvrtc"), pytest.raises(RuntimeError, match="libcuda"):
            mcuda.extension()


# ----------------------------------------------------------------------------- on a GPU: nvrtc == compiled == torch
def _both_runtimes(fn):
    """fn() on the compiled module and on the run-time kernels."""
    if mcuda.extension_error("nvrtc"):
        pytest.fail(f"the run-time kernels should load on a GPU machine: {mcuda.extension_error('nvrtc')}")
    out = {}
    for kind in ("compiled", "nvrtc"):
        if mcuda.extension_error(kind):
            continue
        with mcuda.using(kind):
            out[kind] = fn()
    return out


def _assert_agree(res: dict, ref, tol: float = 1e-4) -> None:
    """Each runtime's outputs match the reference (when given) and each other (tightly)."""
    for kind, outs in res.items():
        for a, b in zip(outs, ref if ref is not None else outs, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=kind)
    if len(res) == 2:
        for a, b in zip(res["compiled"], res["nvrtc"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_vq_matches_compiled_and_reference(dtype):
    from mcc_fast import ops

    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.randn(700, 64, device="cuda", generator=g).to(dtype).requires_grad_()
    cb = torch.randn(1024, 64, device="cuda", generator=g).to(dtype).requires_grad_()

    def run():
        q = ops.quantize(z, cb, 512, backend="cuda", deterministic=True)
        gz, gcb = torch.autograd.grad((q.z_q.float().square().sum() + q.loss), (z, cb))
        return q.indices, q.z_q, q.loss, gz, gcb

    res = _both_runtimes(run)
    ref = ops.quantize(z, cb, 512, backend="torch")
    for kind, (idx, zq, loss, gz, gcb) in res.items():
        if dtype == torch.float32:  # bf16 near-ties may pick differently from the reference
            assert torch.equal(idx, ref.indices), kind
            torch.testing.assert_close(zq, ref.z_q, msg=kind)
            torch.testing.assert_close(loss, ref.loss, rtol=1e-4, atol=1e-6, msg=kind)
        assert bool((idx >= 0).all()) and bool(torch.isfinite(gz).all()) and bool(torch.isfinite(gcb).all()), kind
    _assert_agree(res, None)


@pytest.mark.gpu
def test_gpu_warp_matches_compiled_and_reference():
    from mcc_fast import ops

    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(2, 5, 16, 12, device="cuda", generator=g).requires_grad_()
    flow = (torch.rand(2, 8, 6, 2, device="cuda", generator=g) * 2.4 - 1.2).requires_grad_()
    occ = torch.rand(2, 1, 8, 6, device="cuda", generator=g).requires_grad_()

    def run(backend="cuda"):
        out = ops.warp(x, flow, occ, backend=backend, deterministic=True)
        return (out, *torch.autograd.grad(out.square().sum(), (x, flow, occ)))

    _assert_agree(_both_runtimes(run), run("torch"))


@pytest.mark.gpu
def test_gpu_dense_motion_matches_compiled_and_reference():
    from mcc_fast import ops

    g = torch.Generator(device="cuda").manual_seed(2)
    src = torch.randn(2, 3, 24, 20, device="cuda", generator=g).requires_grad_()
    kp_s = (torch.rand(2, 10, 2, device="cuda", generator=g) * 2 - 1).requires_grad_()
    kp_d = (torch.rand(2, 10, 2, device="cuda", generator=g) * 2 - 1).requires_grad_()
    jac_s = (torch.eye(2, device="cuda") + 0.1 * torch.randn(2, 10, 2, 2, device="cuda", generator=g)).requires_grad_()
    jac_d = (torch.eye(2, device="cuda") + 0.1 * torch.randn(2, 10, 2, 2, device="cuda", generator=g)).requires_grad_()
    logits = torch.randn(2, 11, 24, 20, device="cuda", generator=g).requires_grad_()
    leaves = (src, kp_s, kp_d, jac_s, jac_d, logits)

    def run(backend="cuda"):
        inp = ops.dense_motion_input(src, kp_s, kp_d, jac_s, jac_d, backend=backend)
        flow = ops.compose_flow(logits, kp_s, kp_d, jac_s, jac_d, backend=backend)
        heat = ops.keypoint_heatmaps(kp_d, (24, 20), backend=backend)
        sparse = ops.sparse_motions(kp_s, kp_d, jac_s, jac_d, size=(24, 20), backend=backend)
        loss = inp.square().sum() + flow.square().sum()
        return (inp, flow, heat, sparse, *torch.autograd.grad(loss, leaves))

    _assert_agree(_both_runtimes(run), run("torch"))
