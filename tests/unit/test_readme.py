"""The README's configuration examples stay valid: they are loaded like a user would."""

from __future__ import annotations

from pathlib import Path

import trustme

from lbproxy.runtime.validate import load_checked

README = Path(__file__).resolve().parents[2] / "README.md"


def yaml_blocks() -> list[str]:
    parts = README.read_text().split("```yaml\n")[1:]
    return [part.split("```", 1)[0] for part in parts]


def test_the_full_example_is_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("LBPROXY_ADMIN_PASSWORD", "secret")
    text = next(block for block in yaml_blocks() if "frontends:" in block and "tls:" in block)
    ca = trustme.CA()
    for name in ("shop", "api"):
        cert = ca.issue_cert(f"{name}.example.com")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        text = text.replace(f"conf/certs/{name}.", f"{tmp_path}/{name}.")
    path = tmp_path / "lbproxy.yaml"
    path.write_text(text)
    config = load_checked(path)
    assert set(config.frontends["web"].acls) == {"is_api", "is_admin", "office"}
    assert config.backends["api"].balance == "least_response_time"


def test_the_converters_example_is_valid(tmp_path):
    block = next(block for block in yaml_blocks() if "map(conf/hosts.map)" in block)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "hosts.map").write_text("www.example.com app\n")
    (tmp_path / "conf" / "networks.map").write_text("10.0.0.0/8 office\n")
    block = block.replace("web:\n", "web:\n    bind: ':8080'\n", 1)
    path = tmp_path / "lbproxy.yaml"
    path.write_text(block + "backends: {app: {servers: []}}\n")
    assert load_checked(path).frontends["web"].use_backend[0].backend.startswith("%[")


def test_the_autoscale_example_is_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("LBPROXY_ADMIN_PASSWORD", "secret")
    block = next(block for block in yaml_blocks() if block.startswith("autoscale:"))
    path = tmp_path / "lbproxy.yaml"
    path.write_text("frontends: {web: {bind: ':8080', default_backend: app}}\n"
                    "backends: {app: {servers: []}}\n" + block)
    assert load_checked(path).autoscale.pools["app"].max == 10
