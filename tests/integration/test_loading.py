"""Loading as an operator meets it: `lbproxy check` and `run` from any working directory,
paths relative to the file that names them, every error of a load at once, and a
failed bind that names its address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
import trustme

from tests.harness import get, wait_for
from tests.process import LbproxyProcess, free_port

NO_SUCH_FILE = "No such file or directory"


def lbproxy(*args: str, cwd: Path, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbproxy", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory that holds none of the configuration's files."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """/etc/lbproxy/ of a test: certificates in certs/, a logs/ directory."""
    path = tmp_path / "etc-lbproxy"
    (path / "certs").mkdir(parents=True)
    (path / "logs").mkdir()
    ca = trustme.CA()
    cert = ca.issue_cert("site.test")
    cert.cert_chain_pems[0].write_to_path(str(path / "certs" / "site.pem"))
    cert.private_key_pem.write_to_path(str(path / "certs" / "site.key"))
    ca.cert_pem.write_to_path(str(path / "certs" / "ca.pem"))
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(dedent(text))
    return path


def config_text(port: int, backend_port: int = 9, cert: str = "certs/site.pem",
                key: str = "certs/site.key") -> str:
    return f"""\
        global:
          log: {{access: logs/access.log, format: json}}
          pidfile: lbproxy.pid
        frontends:
          web:
            bind:
              - "127.0.0.1:{port}"
              - address: "127.0.0.1:{free_port()}"
                tls:
                  certificates:
                    - cert: {cert}
                      key: {key}
            default_backend: app
        backends:
          app:
            servers:
              - {{name: app1, address: "127.0.0.1:{backend_port}"}}
              - name: secure
                address: "127.0.0.1:{free_port()}"
                backup: true
                tls: {{ca: certs/ca.pem, sni: site.test}}
        """


def test_check_resolves_paths_against_the_files_directory(etc: Path, elsewhere: Path) -> None:
    write(etc / "lbproxy.yaml", config_text(free_port()))
    result = lbproxy("check", "-c", f"{etc}/", cwd=elsewhere)
    assert (result.returncode, result.stdout.strip()) == (0, "configuration is valid"), \
        result.stderr


def test_a_missing_file_is_named_by_its_absolute_path_on_its_key_line(etc: Path,
                                                                      elsewhere: Path) -> None:
    yaml = write(etc / "lbproxy.yaml", config_text(free_port(), cert="certs/other.pem",
                                                   key="../keys/other.key"))
    result = lbproxy("check", "-c", f"{etc}/", cwd=elsewhere)
    assert result.returncode == 1
    where = f"{yaml}:11: frontends.web.bind[1].tls.certificates[0]"
    assert result.stderr.splitlines() == [
        f"{where}.cert: cannot read {etc / 'certs' / 'other.pem'}: {NO_SUCH_FILE}",
        f"{yaml}:12: frontends.web.bind[1].tls.certificates[0].key: cannot read "
        f"{etc.parent / 'keys' / 'other.key'}: {NO_SUCH_FILE}",
    ]


def test_every_error_of_a_load_is_reported_at_once(etc: Path, elsewhere: Path) -> None:
    """An unset environment variable, a file that is no certificate, a key of another
    certificate and an unknown ACL: one run of check reports them all, in line order."""
    (etc / "certs" / "junk.pem").write_text("not a certificate\n")
    other = trustme.CA().issue_cert("other.test")
    other.private_key_pem.write_to_path(str(etc / "certs" / "other.key"))
    yaml = write(etc / "lbproxy.yaml", f"""\
        stats:
          bind: "127.0.0.1:{free_port()}"
          auth: {{username: admin, password: "${{LBPROXY_TEST_UNSET}}"}}
        frontends:
          web:
            bind:
              - address: "127.0.0.1:{free_port()}"
                tls:
                  certificates:
                    - {{cert: certs/junk.pem, key: certs/site.key}}
                    - {{cert: certs/site.pem, key: certs/other.key}}
            http_request:
              - deny: {{}}
                if: is_admn
            default_backend: app
        backends:
          app: {{servers: []}}
        """)
    env = {k: v for k, v in os.environ.items() if k != "LBPROXY_TEST_UNSET"}
    result = subprocess.run([sys.executable, "-m", "lbproxy", "check", "-c", str(yaml)],
                            cwd=elsewhere, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 1
    tls = f"{yaml}:7: frontends.web.bind[0].tls.certificates"
    assert result.stderr.splitlines() == [
        f"{yaml}:3: stats.auth.password: environment variable 'LBPROXY_TEST_UNSET' is not "
        "set (and has no default)",
        f"{tls}[0].cert: no PEM certificate in {etc / 'certs' / 'junk.pem'}",
        f"{tls}[1]: key {etc / 'certs' / 'other.key'} does not match certificate "
        f"{etc / 'certs' / 'site.pem'}",
        f"{yaml}:13: frontends.web.http_request[0].if: unknown ACL 'is_admn'",
    ]


def test_run_writes_relative_files_beside_the_configuration(etc: Path, elsewhere: Path,
                                                            backends) -> None:
    (app,) = backends(1)
    port = free_port()
    write(etc / "lbproxy.yaml", config_text(port, app.port))
    with LbproxyProcess("run", "-c", f"{etc}/", wait_port=port, cwd=elsewhere):
        assert get(port).status == 200
        assert (etc / "lbproxy.pid").exists()
        wait_for(lambda: b'"status":200' in (etc / "logs" / "access.log").read_bytes())
    assert os.listdir(elsewhere) == []


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        yaml = write(tmp_path / "lb.yaml", f"""\
            frontends:
              web: {{bind: "127.0.0.1:{free_port()}", default_backend: app}}
              other: {{bind: "127.0.0.1:{port}", default_backend: app}}
            backends:
              app: {{servers: []}}
            """)
        result = lbproxy("run", "-c", str(yaml), cwd=tmp_path)
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
        assert "Traceback" not in result.stderr

        write(yaml, f"""\
            stats: {{bind: "127.0.0.1:{port}"}}
            frontends:
              web: {{bind: "127.0.0.1:{free_port()}", default_backend: app}}
            backends:
              app: {{servers: []}}
            """)
        result = lbproxy("run", "-c", str(yaml), cwd=tmp_path)
        assert result.returncode == 1
        assert (f"cannot listen on 127.0.0.1:{port} (stats): Address already in use"
                in result.stderr)
        assert "Traceback" not in result.stderr


def test_a_configuration_without_frontends_does_not_start(tmp_path: Path) -> None:
    yaml = write(tmp_path / "lb.yaml", "backends:\n  app: {servers: []}\n")
    for command in ("check", "run"):
        result = lbproxy(command, "-c", str(yaml), cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"{yaml}:1: (top level): no frontend defined: a configuration needs at least one "
            "under 'frontends:'"]
