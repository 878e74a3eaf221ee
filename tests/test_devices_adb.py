"""The Android phone over adb (chapter 2): command construction and parsing of outputs in the tools' formats
(tests/data/adb, see its README: written to the documented formats, not captured from a phone)."""

from pathlib import Path

import numpy as np
import pytest

from ersam_lib.measure.devices import (AdbPhone, battery_energy_mj, parse_battery_samples, parse_dumpsys_battery,
                                       parse_runner_output)

DATA = Path(__file__).parent / "data" / "adb"


def test_parse_runner_output_total():
    n, total = parse_runner_output((DATA / "executor_runner.txt").read_text())
    assert (n, total) == (100, pytest.approx(408.229))


def test_parse_runner_output_without_summary_raises():
    with pytest.raises(ValueError, match="Model executed successfully"):
        parse_runner_output("E 00:00:00.1 executorch:executor_runner.cpp:90] Failed to load program\n")


def test_parse_dumpsys_battery():
    unplugged = parse_dumpsys_battery((DATA / "dumpsys_battery_unplugged.txt").read_text())
    assert unplugged["level"] == 81 and unplugged["voltage"] == 4012 and not unplugged["on_external_power"]
    usb = parse_dumpsys_battery((DATA / "dumpsys_battery_usb.txt").read_text())
    assert usb["usb_powered"] and usb["on_external_power"]
    with pytest.raises(ValueError, match="dumpsys battery"):
        parse_dumpsys_battery("hello: world\n")


def test_battery_samples_to_energy():
    s = parse_battery_samples((DATA / "battery_samples.txt").read_text())
    assert s.shape == (8, 3) and (s[:, 1] > 0).all()  # discharge sign dropped
    energy, power = battery_energy_mj(s)
    # Hand check: power = |I| * V; trapezoid over 0.35 s.
    p = np.abs(s[:, 1]) * s[:, 2] * 1e-9
    assert energy == pytest.approx(np.trapezoid(p, s[:, 0]))
    assert 1500 < power < 3000  # ~0.6 A at ~4 V
    with pytest.raises(ValueError, match="two battery samples"):
        parse_battery_samples("1.0 2 3\n")


def test_command_construction_pins_core_and_samples_battery():
    phone = AdbPhone(runner_binary="build/executor_runner", serial="R58M123", cpu_mask="f0", executions=50)
    push = phone.push_commands("/tmp/x/model.pte")
    assert push[0][:3] == ["adb", "-s", "R58M123"]
    assert ["adb", "-s", "R58M123", "push", "build/executor_runner", "/data/local/tmp/ersam/executor_runner"] in push
    assert push[-1][-1] == "/data/local/tmp/ersam/model.pte"
    cmd = phone.run_command("/tmp/x/model.pte")
    assert cmd[:4] == ["adb", "-s", "R58M123", "shell"] and len(cmd) == 5
    script = cmd[4]
    assert "taskset f0 /data/local/tmp/ersam/executor_runner --model_path /data/local/tmp/ersam/model.pte" in script
    assert "--num_executions 50 --cpu_threads 1" in script
    assert "/sys/class/power_supply/battery/current_now" in script and "voltage_now" in script
    assert AdbPhone()._adb("devices") == ["adb", "devices"]  # no serial: no -s


def _replay(battery_file: str):
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[-2:] == ["dumpsys", "battery"]:
            return (DATA / battery_file).read_text()
        if argv[-1].startswith("touch"):
            return (DATA / "executor_runner.txt").read_text()
        if argv[-2] == "cat":
            return (DATA / "battery_samples.txt").read_text()
        return ""

    return run, calls


def test_measure_with_replayed_outputs():
    run, calls = _replay("dumpsys_battery_unplugged.txt")
    stats = AdbPhone(run=run).measure(b"pte-bytes", (1, 40, 500))
    assert stats.count == 100 and stats.median == pytest.approx(4.08229)
    energy_total, power = battery_energy_mj(parse_battery_samples((DATA / "battery_samples.txt").read_text()))
    assert stats.energy_mj == pytest.approx(energy_total / 100)
    assert stats.metadata["battery"]["level"] == 81 and stats.metadata["mean_power_mw"] == pytest.approx(power)
    assert len(calls) == 7  # dumpsys, mkdir, push runner, chmod, push model, run, cat samples


def test_measure_refuses_usb_power_and_missing_adb():
    run, _ = _replay("dumpsys_battery_usb.txt")
    with pytest.raises(RuntimeError, match="USB/AC power"):
        AdbPhone(run=run).measure(b"pte", (1, 40, 500))
    with pytest.raises(RuntimeError, match="adb not found"):
        AdbPhone(adb="/nonexistent/adb").measure(b"pte", (1, 40, 500))
