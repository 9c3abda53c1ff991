"""bench/gpu_check.sh's step and budget logic, with stand-in commands (no GPU, nothing built):
every step runs in order and records its exit status, a step that would overrun the budget is
cut off, later steps are skipped once the budget is spent, and the script fails only on a
failed step."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"

# A stand-in for python: the environment heredoc writes JSON, the summary prints a table,
# pytest / pip / the benchmarks sleep $FAKE_SLEEP_<step> seconds, and exit $FAKE_RC_<step>.
FAKE_PYTHON = r"""#!/usr/bin/env bash
args="$*"
case "$args" in
  "- "*) cat > /dev/null; echo '{}' > "$2"; [ -n "${FAKE_NO_GPU:-}" ] && exit 3; exit 0 ;;
  *summarize.py*) echo "| ratio |"; exit 0 ;;
esac
step=other
case "$args" in
  *"pip install"*) step=build ;;
  *"mcc_fast info"*) step=info ;;
  *"pytest -q -m gpu -x"*) step=sanitized ;;
  *"pytest -q -m gpu"*) step=gputests ;;
  *"-k triton"*) step=tritontests ;;
  *"pytest -q bench"*) step=bench ;;
  *training.benchmark*) step=trainbench ;;
esac
echo "fake python: $step"
prev=""
for a in "$@"; do [ "$prev" = "--benchmark-json" ] && echo '{}' > "$a"; prev=$a; done
sleep_var="FAKE_SLEEP_$step"; rc_var="FAKE_RC_$step"
sleep "${!sleep_var:-0}"
exit "${!rc_var:-0}"
"""


def _run(tmp_path: Path, *args: str, **env: str) -> tuple[int, dict[str, str], str]:
    if shutil.which("timeout") is None:
        pytest.skip("needs coreutils timeout")
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "bench" / "gpu_check.sh")
    for name in ("tests",):
        (repo / name).mkdir()
    for name in ("test_vq.py", "test_warp.py", "test_group_norm_swish.py", "test_cuda_runtime.py"):
        (repo / "tests" / name).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    sanitizer = bin_dir / "compute-sanitizer"
    sanitizer.write_text('#!/usr/bin/env bash\nshift 4\nexec "$@"\n')  # drop --tool X --error-exitcode 1
    sanitizer.chmod(0o755)
    out = tmp_path / "results"
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    proc = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), *args, "--out", str(out)],
                          capture_output=True, text=True, env=full_env, timeout=120, check=False)
    (status_file,) = out.glob("gpu_check-*.status")
    status = dict(line.split(" ", 1) for line in status_file.read_text().splitlines())
    return proc.returncode, status, proc.stdout


def test_every_step_runs_in_order_and_records_its_status(tmp_path):
    rc, status, stdout = _run(tmp_path, "--quick", "--budget", "200")
    assert rc == 0, stdout
    assert list(status) == ["build", "info", "environment", "gpu-tests", "triton-tests", "bench", "train-bench",
                            "memcheck"]
    assert set(status.values()) == {"rc=0"}
    assert (tmp_path / "results" / "RESULTS.md").read_text().startswith("| ratio |")


def test_a_failed_step_fails_the_script_and_the_rest_still_runs(tmp_path):
    rc, status, _ = _run(tmp_path, "--quick", "--budget", "200", FAKE_RC_gputests="1")
    assert rc != 0
    assert status["gpu-tests"] == "rc=1" and status["bench"] == "rc=0" and status["memcheck"] == "rc=0"


def test_the_budget_cuts_a_long_step_and_skips_what_no_longer_fits(tmp_path):
    # 25 s of budget: the build (needs 120 s) is skipped, the info step (needs 20 s) would take
    # 60 s and is cut at what is left minus 5 s, and every later step is skipped
    rc, status, _ = _run(tmp_path, "--quick", "--budget", "25", FAKE_SLEEP_info="60")
    assert status["build"] == "skipped-budget"
    assert status["info"] == "rc=124"  # timeout's exit status
    assert status["gpu-tests"] == status["bench"] == status["train-bench"] == status["memcheck"] == "skipped-budget"
    assert rc != 0  # the cut step counts as failed


def test_a_failed_training_benchmark_is_recorded(tmp_path):
    rc, status, _ = _run(tmp_path, "--quick", "--budget", "200", FAKE_RC_trainbench="1")
    assert status["train-bench"] == "rc=1" and rc != 0


def test_no_gpu_visible_fails_the_script(tmp_path):
    rc, status, _ = _run(tmp_path, "--quick", "--budget", "200", FAKE_NO_GPU="1")
    assert status["environment"] == "rc=3" and rc != 0
