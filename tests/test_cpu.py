"""The thread policy: how busy the CPUs are, the OpenMP wait policy chosen before torch loads, and
the thread count a run computes with when none is set."""

import os
import subprocess
import sys

import pytest

from tttlab import cpu


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(cpu, "_affinity", lambda: {0, 1})
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)
    monkeypatch.setattr(cpu, "START", None)


@pytest.mark.parametrize("busy, threads", [(None, 2), (0.1, 2), (0.6, 1), (2.0, 1), (7.5, 1)])
def test_threads_are_the_cpus_other_work_left_idle(two_cpus, busy, threads):
    assert cpu.free_threads(busy, 2) == threads


def test_a_busy_machine_gets_the_passive_wait_policy(two_cpus, monkeypatch):
    monkeypatch.setattr(cpu, "busy_cpus", lambda seconds=0.05: 1.9)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as when tttlab is imported first
    env: dict[str, str] = {}
    start = cpu.choose_openmp(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and start.threads == 1
    assert "1.9 of 2 CPUs busy" in start.policy


def test_a_quiet_machine_gets_a_bounded_spin(two_cpus, monkeypatch):
    monkeypatch.setattr(cpu, "busy_cpus", lambda seconds=0.05: 0.1)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    env: dict[str, str] = {}
    start = cpu.choose_openmp(env)
    assert env == {"GOMP_SPINCOUNT": cpu.QUIET_SPINCOUNT, "TTTLAB_OPENMP": "1"}
    assert start.threads == 2


def test_a_wait_policy_the_user_set_is_kept(two_cpus, monkeypatch):
    monkeypatch.setattr(cpu, "busy_cpus", lambda seconds=0.05: 2.0)
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert "set by the user" in cpu.choose_openmp(env).policy
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_run_s_threads_setting_wins_then_omp_num_threads_then_the_load(two_cpus, monkeypatch):
    monkeypatch.setattr(cpu, "busy_cpus", lambda seconds=0.05: 1.5)
    assert cpu.policy_threads(3) == cpu.ThreadChoice(3, "set")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu.policy_threads() == cpu.ThreadChoice(2, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    choice = cpu.policy_threads()
    assert choice.threads == 1 and "1.5 busy with other work" in choice.reason


def test_importing_tttlab_sets_the_policy_before_torch_loads():
    """In a fresh process: the variable is set by the time torch (and its libgomp) loads."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TTTLAB_OPENMP")}  # fmt: skip
    code = (
        "import os, tttlab, torch; "
        "print(os.environ.get('OMP_WAIT_POLICY') or os.environ['GOMP_SPINCOUNT'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("PASSIVE", cpu.QUIET_SPINCOUNT)
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"
