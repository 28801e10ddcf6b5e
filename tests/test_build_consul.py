"""
``tools/build-consul.sh``, the first thing ``make test`` runs on a fresh
machine, run for real with a fake ``go`` first on ``PATH`` and an empty
``GLIMPSE_CACHE``: the fake logs how it was called, and its ``build``
writes a fake "consul" (a shell script) that prints its version and then
many more lines, or fails, or reports another version, or never finishes.
"""

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from glimpse.dev.twistd import REPO

from support import wait_until

SCRIPT = REPO / "tools" / "build-consul.sh"
GO_SUM = REPO / "tools" / "consul" / "go.sum"
VERSION = "1.14.11"
GO_VERSION = "go version go1.99.0 linux/amd64"
MPL = "Mozilla Public License, version 2.0\n\n1. Definitions\n"
BUSL = "Business Source License 1.1\n\nParameters\n\nLicensor: HashiCorp, Inc.\n"

FAKE_GO = r"""#!/bin/sh
# A fake go: logs its arguments, and does what FAKE_GO_BUILD says.
echo "$*" >> "$FAKE_GO_LOG"
case "$1" in
    version) echo "$FAKE_GO_VERSION" ;;
    env) echo off ;;
    mod) [ "$FAKE_GO_DOWNLOAD" = ok ] || { echo "fake go: proxy unreachable" >&2; exit 1; } ;;
    list) echo "$FAKE_GO_MODULE" ;;
    build)
        out=""
        while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done
        case "$FAKE_GO_BUILD" in
            ok|wrong)
                [ "$FAKE_GO_BUILD" = ok ] && v="$FAKE_CONSUL_VERSION" || v=1.15.0
                printf '#!/bin/sh\necho "Consul v%s"\nseq 1 200000\n' "$v" > "$out"
                chmod +x "$out" ;;
            fail)
                echo "half a binary" > "$out"
                echo "fake go: compile error in consul/agent" >&2
                exit 1 ;;
            hang)
                echo "half a binary" > "$out"
                echo $$ > "$FAKE_GO_PIDFILE"
                exec sleep 600 ;;
        esac ;;
esac
"""


class Run:
    """
    The script's environment: a fake ``go`` and an empty cache, both under
    a temp directory.
    """

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        fakebin = tmp_path / "bin"
        fakebin.mkdir()
        go = fakebin / "go"
        go.write_text(FAKE_GO)
        go.chmod(0o755)
        self.log = tmp_path / "go.log"
        self.cache = tmp_path / "cache"
        self.out = self.cache / f"consul-{VERSION}"
        self.bin = self.out / "consul"
        self.module = tmp_path / "module"
        self.module.mkdir()
        (self.module / "LICENSE").write_text(MPL)
        self.pidfile = tmp_path / "go.pid"
        env = {k: v for k, v in os.environ.items() if k != "GLIMPSE_CONSUL"}
        env.update(PATH=f"{fakebin}:/usr/bin:/bin", HOME=str(tmp_path),
                   GLIMPSE_CACHE=str(self.cache), FAKE_GO_LOG=str(self.log),
                   FAKE_GO_VERSION=GO_VERSION, FAKE_GO_DOWNLOAD="ok", FAKE_GO_BUILD="ok",
                   FAKE_CONSUL_VERSION=VERSION, FAKE_GO_MODULE=str(self.module),
                   FAKE_GO_PIDFILE=str(self.pidfile))
        self.env = env
        self.processes = []

    def start(self, **fake):
        env = dict(self.env, **fake)
        process = subprocess.Popen([str(SCRIPT)], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def stop(self):
        """
        End whatever a failed test left running: the script, and a fake
        build that outlived it.
        """
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
        if self.pidfile.exists():
            try:
                os.kill(int(self.pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def __call__(self, **fake):
        """
        Run the script to its end: ``(returncode, stdout, stderr)``.
        """
        process = self.start(**fake)
        stdout, stderr = process.communicate(timeout=60)
        return process.returncode, stdout, stderr

    def go_calls(self):
        """
        The fake go's subcommands, in order, and forget them.
        """
        calls = [line.split()[0] for line in self.log.read_text().splitlines()] \
            if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return calls

    def leftovers(self):
        return sorted(p.name for p in self.out.glob("consul.tmp.*")) if self.out.exists() else []


@pytest.fixture
def run(tmp_path):
    run = Run(tmp_path)
    yield run
    run.stop()


def expected_key(go_version=GO_VERSION):
    return hashlib.sha256(GO_SUM.read_bytes() + f"{go_version}\n".encode()).hexdigest()[:16]


def test_first_build_is_cached_with_its_key_and_reused_without_building(run):
    """
    The first run builds Consul, checks that it reports v1.14.11 (through
    200,000 more lines of output: the check that failed by SIGPIPE on a
    fresh machine), caches it with its key and prints its path; the second
    run prints the same path and only asks go its version.
    """
    code, stdout, stderr = run()
    assert code == 0, stderr
    assert stdout.strip() == str(run.bin)
    assert run.bin.read_text().startswith("#!/bin/sh")
    assert (run.out / "key").read_text().strip() == expected_key()
    assert run.leftovers() == []
    assert run.go_calls() == ["version", "mod", "list", "build"]

    code, stdout, stderr = run()
    assert (code, stdout.strip()) == (0, str(run.bin)), stderr
    assert run.go_calls() == ["version"]


def test_another_go_toolchain_builds_afresh(run):
    """
    A cached binary built by another toolchain is not reused: the key
    changes and Consul is built again.
    """
    assert run()[0] == 0
    run.go_calls()
    code, _, stderr = run(FAKE_GO_VERSION="go version go1.100.0 linux/amd64")
    assert code == 0, stderr
    assert "build" in run.go_calls()
    assert (run.out / "key").read_text().strip() == \
        expected_key("go version go1.100.0 linux/amd64")


def test_failed_build_leaves_nothing_and_says_so(run):
    """
    A go build that fails (having written half a binary) leaves no temp
    file and no cached binary, and the error says what failed and what to
    try; the next run builds again.
    """
    code, stdout, stderr = run(FAKE_GO_BUILD="fail")
    assert code != 0 and stdout == ""
    assert "build-consul: go build failed" in stderr and "GLIMPSE_CONSUL" in stderr
    assert run.leftovers() == [] and not run.bin.exists() and not (run.out / "key").exists()
    run.go_calls()
    assert run()[0] == 0
    assert "build" in run.go_calls()


def test_binary_reporting_another_version_is_refused_and_removed(run):
    """
    A built binary whose ``version`` names another release is not cached:
    the error quotes what it said, and the temp binary is gone.
    """
    code, stdout, stderr = run(FAKE_GO_BUILD="wrong")
    assert code != 0 and stdout == ""
    assert f"does not report Consul v{VERSION} (it says: Consul v1.15.0)" in stderr
    assert run.leftovers() == [] and not run.bin.exists()


def test_release_under_another_licence_is_never_built(run):
    """
    The licence guard reads the downloaded module's LICENSE: a release
    that is not MPL-2.0 (Consul >= 1.17 is BUSL) is refused before go build
    runs.
    """
    (run.module / "LICENSE").write_text(BUSL)
    code, stdout, stderr = run()
    assert code != 0 and stdout == ""
    assert "is not MPL-2.0; refusing to build" in stderr
    assert "build" not in run.go_calls()
    assert run.leftovers() == [] and not run.bin.exists()


def test_unreachable_module_proxy_is_a_clear_error(run):
    """
    When the module cannot be downloaded the error says to check the Go
    module proxy, and nothing is built.
    """
    code, _, stderr = run(FAKE_GO_DOWNLOAD="fail")
    assert code != 0
    assert "could not download the Consul module" in stderr and "GOPROXY=off" in stderr
    assert "build" not in run.go_calls()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_interrupted_build_is_stopped_and_its_temp_file_removed(run, signum):
    """
    Killing the script mid-build (Ctrl-C, a closed terminal, a CI
    timeout's SIGTERM) ends it at once: the go build is stopped too, so it
    cannot write the temp binary after it was removed, and none is left.
    """
    process = run.start(FAKE_GO_BUILD="hang")
    wait_until(lambda: run.pidfile.exists() and run.pidfile.read_text().strip(),
               what="the fake go build to start")
    go_pid = int(run.pidfile.read_text())
    assert run.leftovers(), "the fake build wrote no temp file"
    process.send_signal(signum)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signum
    assert run.leftovers() == [] and not run.bin.exists()
    assert not Path(f"/proc/{go_pid}").exists(), "the go build outlived the script"


def test_temp_file_of_a_killed_run_is_removed_by_the_next(run):
    """
    SIGKILL cannot be trapped: the temp binary of a run killed outright
    (its pid no longer running) is removed by the next build; one of a
    build still running is left to it.
    """
    dead = subprocess.Popen(["true"])
    dead.wait()
    run.out.mkdir(parents=True)
    stale = run.out / f"consul.tmp.{dead.pid}"
    stale.write_text("half a binary")
    running = run.out / f"consul.tmp.{os.getpid()}"
    running.write_text("being written")
    assert run()[0] == 0
    assert not stale.exists() and running.exists()
