"""`distvmc doctor` on one rank and under mpirun: every check passes here and it ends with OK."""

from __future__ import annotations

import sys

import pytest

from conftest import cli
from test_multirank import Run, _env, backend  # noqa: F401  (backend: the mpi/horovod fixture)

SECTIONS = ("versions", "devices", "collectives (", "SR solvers (", "physics",
            "3D oscillator, Gaussian ansatz", "hydrogen, exp(-a r)", "phases (")


def test_doctor_on_one_rank_checks_everything_and_says_ok(tmp_path):
    r = cli("doctor", cwd=tmp_path, timeout=300)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    for s in SECTIONS:
        assert s in out, (s, out)
    assert "rank 0/1: " in out and "tensorflow " in out and "mpi4py " in out
    assert "exact on every rank" in out and "bitwise equal on every rank" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("distvmc doctor: OK (1 rank(s), backend single"), last


@pytest.mark.mpi
def test_doctor_on_two_ranks_checks_every_rank_and_says_ok(backend, tmp_path):
    run = Run([sys.executable, "-m", "distvmc", "doctor", "--backend", backend], _env(), tmp_path,
              timeout=300)
    out = run.output
    assert run.returncode == 0, run.tail()
    assert "rank 0/2: " in out and "rank 1/2: " in out
    assert f"collectives ({backend}, 2 rank(s))" in out and "exact on every rank" in out
    assert out.count(f"distvmc doctor: OK (2 rank(s), backend {backend}") == 1  # rank 0 speaks


def test_doctor_names_tensorflow_and_tensorflow_cpu_side_by_side(monkeypatch, capsys):
    from distvmc import doctor

    real = doctor._version
    monkeypatch.setattr(doctor, "_version",
                        lambda d: "2.21.0" if d in ("tensorflow", "tensorflow-cpu") else real(d))
    rep = doctor.Report(None)
    doctor.versions(rep, "single")
    (what, fix), *_ = rep.problems
    assert "tensorflow and tensorflow-cpu are both installed" in what
    assert "pip uninstall" in fix
