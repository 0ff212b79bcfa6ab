"""Plain test doubles for pure-logic tests (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeRequest:
    """Implements lbproxy.http.request.RequestInfo from plain fields."""

    method: str = "GET"
    url: str = "/"
    src: str = "127.0.0.1"
    src_port: int = 40000
    dst_port: int = 8080
    ssl_fc: bool = False
    ssl_fc_sni: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.url.split("?", 1)[1] if "?" in self.url else ""

    @property
    def host(self) -> str:
        value = self.header("host") or ""
        if value.startswith("["):
            return value[: value.find("]") + 1].lower()
        return value.split(":", 1)[0].lower()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        return [part.strip() for key, value in self.headers if key.lower() == name
                for part in value.split(",")]

    def cookie(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() != "cookie":
                continue
            for pair in value.split(";"):
                k, _, v = pair.strip().partition("=")
                if k == name:
                    return v
        return None
