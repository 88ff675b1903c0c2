"""The systemd units: systemd-analyze verify and security, and the sandbox onnxruntime runs in."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
EXEC = "/opt/edge-agent/current/bin/edge-agent"
MAX_EXPOSURE = 2.0


@pytest.fixture(autouse=True)
def _need_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: deploy/ci-prereqs.sh installs systemd")


def unit_dir(tmp_path: Path, dropins: tuple[str, ...] = ()) -> Path:
    """The units with ExecStart pointing at an existing executable, as verify requires."""
    out = tmp_path / "units"
    out.mkdir()
    for name in ("edge-agent.service", "edge-agent@.service"):
        text = (SYSTEMD / name).read_text()
        assert f"ExecStart={EXEC} run -c " in text
        (out / name).write_text(text.replace(EXEC, "/bin/true"))
    for dropin in dropins:
        target = out / "edge-agent.service.d"
        target.mkdir(exist_ok=True)
        shutil.copy(SYSTEMD / dropin, target / dropin)
    return out


def verify(units: Path, unit: str) -> subprocess.CompletedProcess[str]:
    # SYSTEMD_UNIT_PATH with a trailing ':' puts our directory before the system's, so
    # drop-ins next to the units are read too; every parse problem is printed on stderr.
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", unit],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


@pytest.mark.parametrize(
    ("unit", "dropins"),
    [
        ("edge-agent.service", ()),
        ("edge-agent.service", ("mqtt-password.conf",)),
        ("edge-agent.service", ("jetson-cuda.conf",)),
        ("edge-agent@garden.service", ()),
    ],
)
def test_units_verify_without_a_warning(tmp_path: Path, unit: str, dropins: tuple[str]) -> None:
    result = verify(unit_dir(tmp_path, dropins), unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_would_catch_a_typo(tmp_path: Path) -> None:
    units = unit_dir(tmp_path)
    unit = units / "edge-agent.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    assert "Unknown key 'ProtectHom'" in verify(units, "edge-agent.service").stderr


def exposure(tmp_path: Path, unit: str, dropins: tuple[str, ...] = ()) -> float:
    root = tmp_path / "root"
    shutil.copytree(unit_dir(tmp_path, dropins), root / "etc" / "systemd" / "system")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", ["edge-agent.service", "edge-agent@garden.service"])
def test_sandbox_exposure_is_at_most_two(tmp_path: Path, unit: str) -> None:
    assert exposure(tmp_path, unit) <= MAX_EXPOSURE


def test_template_has_the_same_sandbox_as_the_main_unit() -> None:
    def service_lines(name: str) -> list[str]:
        lines = (SYSTEMD / name).read_text().split("[Service]", 1)[1].splitlines()
        return [ln for ln in lines if ln and not ln.startswith("#") and "%i" not in ln]

    main, template = service_lines("edge-agent.service"), service_lines("edge-agent@.service")
    different = set(main) ^ set(template)
    # Only the per-instance paths may differ.
    assert all(
        ln.startswith(("ExecStart=", "StateDirectory=", "CacheDirectory=", "WorkingDirectory="))
        for ln in different
    ), different
    template_text = (SYSTEMD / "edge-agent@.service").read_text()
    assert f"ExecStart={EXEC} run -c /etc/edge-agent/%i.toml" in template_text
    assert "StateDirectory=edge-agent/%i" in template_text


def test_unit_contract_with_the_service() -> None:
    """What app.run and settings.py rely on: notify, watchdog, credential name."""
    unit = (SYSTEMD / "edge-agent.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "User=edge-agent"):
        assert f"\n{line}\n" in unit
    assert re.search(r"\nWatchdogSec=\d+", unit)
    dropin = (SYSTEMD / "mqtt-password.conf").read_text()
    assert "LoadCredential=mqtt-password:/etc/edge-agent/mqtt-password" in dropin
    assert "Environment=EDGE_AGENT_MQTT__PASSWORD_FILE=%d/mqtt-password" in dropin
    sysusers = (SYSTEMD / "sysusers.d" / "edge-agent.conf").read_text()
    assert re.search(r"^u\s+edge-agent\s", sysusers, re.MULTILINE)


# MemoryDenyWriteExecute=yes is what systemd >= 255 enforces with PR_SET_MDWE where the
# kernel has it (6.3+); older systemd uses a seccomp filter with the same effect. Running
# onnxruntime under the prctl shows the CPU provider creates no writable+executable memory.
MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        print("no-mdwe"); sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("MDWE did not refuse a W+X mapping")
    except OSError:
        pass
    import numpy as np, onnxruntime as ort, tokenizers
    from onnx import TensorProto, helper, numpy_helper
    K, N, B = 64, 32, 32
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 255, size=(N, K // B, B // 2), dtype=np.uint8)
    scales = rng.random((N * (K // B),), dtype=np.float32)
    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft",
                            K=K, N=N, bits=4, block_size=B)
    graph = helper.make_graph(
        [node], "int4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scales, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": rng.random((1, K), dtype=np.float32)})
    print("ok", y.shape)
    """
)


def test_onnxruntime_int4_matmul_runs_under_memory_deny_write_execute() -> None:
    pytest.importorskip("onnx", reason="the probe builds its graph with onnx (export extra)")
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "no-mdwe":
        pytest.skip("kernel without PR_SET_MDWE (< 6.3)")
    assert result.stdout.strip() == "ok (1, 32)"
