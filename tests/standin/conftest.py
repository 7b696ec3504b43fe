"""Fixtures that run tools/kube-standin and talk to it.

  standin          one server for the whole session (tests use unique names)
  fresh_standin    a server of its own, for tests that change global state
                   (faults, settings, history) or restart it
  standin_factory  start servers on a given state dir and port (restart tests)
  kubeconfig       the session server's admin kubeconfig path

The Standin class itself lives in standinlib.py.
"""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from standinlib import KUBECTL, REPO, Response, Standin, WatchStream  # noqa: E402,F401


@pytest.fixture(scope="session")
def standin():
    workdir = tempfile.mkdtemp(prefix="standin-session-")
    s = Standin(workdir).start()
    yield s
    s.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def standin_factory():
    started = []
    dirs = []

    def make(state_dir=None, port=0, workdir=None, extra_args=()):
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="standin-")
            dirs.append(workdir)
        s = Standin(workdir, state_dir, port, extra_args).start()
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fresh_standin(standin_factory):
    return standin_factory()


@pytest.fixture(scope="session")
def kubeconfig(standin):
    return standin.kubeconfig
