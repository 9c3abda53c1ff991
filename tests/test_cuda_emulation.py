"""The CPU emulation of CUDA that runs csrc/'s kernels in the tests (tests/cuda_emulation.h):
its thread indices, barriers, shuffles, shared memory and atomics behave as on a GPU, and a
kernel whose threads wait at different barriers aborts with a message instead of hanging."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"

PROGRAM = r"""
#include "cuda_emulation.h"
#include <cstdio>

// Per block: a shared-memory tree sum, a warp-shuffle sum of each warp (xor and down), an
// atomic count, and the indices, for a (3, 2) grid of (32, 4) blocks.
void kernel(int* out, float* sums, int* count) {
  static float buf[128];  // __shared__
  const int t = threadIdx.x + threadIdx.y * blockDim.x;
  const int block = blockIdx.x + blockIdx.y * gridDim.x;
  buf[t] = static_cast<float>(t + 1);
  __syncthreads();
  for (int w = 64; w > 0; w >>= 1) {
    if (t < w) buf[t] += buf[t + w];
    __syncthreads();
  }
  float v = static_cast<float>(t % 32);
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  float d = static_cast<float>(t % 32 + 1);
  for (int off = 16; off > 0; off >>= 1) d += __shfl_down_sync(0xffffffffu, d, off);
  const float seg = __shfl_xor_sync(0xffffffffu, static_cast<float>(t % 32), 8, 16);
  atomicAdd(count, 1);
  if (t == 0) sums[block] = buf[0];
  out[(block * 128 + t) * 4 + 0] = static_cast<int>(v);
  out[(block * 128 + t) * 4 + 1] = static_cast<int>(d);
  out[(block * 128 + t) * 4 + 2] = static_cast<int>(seg);
  out[(block * 128 + t) * 4 + 3] = static_cast<int>(blockIdx.y * 1000 + blockIdx.x * 100 + threadIdx.y * 10 +
                                                    (threadIdx.x == 31));
}

void deadlock() {  // lane 0 waits at the block barrier while its warp waits in a shuffle
  if (threadIdx.x == 0) __syncthreads();
  else __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

int main(int argc, char**) {
  if (argc > 1) {
    emu::launch({1, 1, 1}, {32, 1, 1}, [] { deadlock(); });
    return 0;
  }
  static int out[6 * 128 * 4];
  static float sums[6];
  int count = 0;
  emu::launch({3, 2, 1}, {32, 4, 1}, [&] { kernel(out, sums, &count); });
  // __shfl_down_sync reference: lanes past the end of the warp read their own value
  int down[32];
  for (int i = 0; i < 32; ++i) down[i] = i + 1;
  for (int off = 16; off > 0; off >>= 1) {
    int next[32];
    for (int i = 0; i < 32; ++i) next[i] = down[i] + (i + off < 32 ? down[i + off] : down[i]);
    for (int i = 0; i < 32; ++i) down[i] = next[i];
  }
  int bad = count != 6 * 128;
  for (int b = 0; b < 6; ++b) {
    bad |= sums[b] != 128.f * 129.f / 2.f;
    for (int t = 0; t < 128; ++t) {
      const int* o = out + (b * 128 + t) * 4;
      const int lane = t % 32, ty = t / 32;
      bad |= o[0] != 31 * 32 / 2;       // xor butterfly: every lane holds the warp's sum
      bad |= o[1] != down[lane];
      bad |= o[2] != (lane ^ 8);        // xor within 16-lane segments
      bad |= o[3] != (b / 3) * 1000 + (b % 3) * 100 + ty * 10 + (lane == 31);
    }
  }
  std::printf(bad ? "MISMATCH\n" : "OK\n");
  return bad;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None or not (INCLUDE / "cuda_fp16.h").exists():
        pytest.skip("needs g++ and the CUDA headers")
    out = tmp_path_factory.mktemp("emulator")
    (out / "check.cpp").write_text(PROGRAM)
    exe = out / "check"
    proc = subprocess.run([gxx, "-O1", "-std=c++20", "-pthread", f"-I{HERE}", f"-I{INCLUDE}", str(out / "check.cpp"),
                           "-o", str(exe)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return exe


def test_indices_barriers_shuffles_shared_memory_and_atomics(program):
    proc = subprocess.run([str(program)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stdout + proc.stderr


def test_a_divergent_barrier_aborts_with_a_message_instead_of_hanging(program):
    proc = subprocess.run([str(program), "deadlock"], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "MCC_EMU_TIMEOUT_S": "1"})
    assert proc.returncode != 0
    assert "did not finish in 1 s" in proc.stderr
