"""The configuration as frozen dataclasses: the one shape the rest of lbproxy reads.

Field names are the YAML keys (`global` becomes `global_`); docs/configuration.md
documents every one, and tests/unit/test_docs.py keeps the two in step. Values are already
normalised: durations are float seconds, sizes int bytes, addresses `Address`, defaults
merged in. Runtime code trusts these objects and never re-validates them. A field without
a default is a required YAML key (the validator reads that off these classes). Rules,
ACLs, servers and sections carry `where` ("FILE:LINE: key.path") so later compile steps
can report errors the same way the loader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Enumerations, in the order the reference lists them (error messages show them in this order).
ALGORITHMS = ("roundrobin", "static-rr", "leastconn", "source", "uri", "url_param", "hdr",
              "random", "least_response_time", "first")
ALGORITHMS_WITH_ARG = ("url_param", "hdr")          # written url_param(NAME), hdr(NAME)
HASH_TYPES = ("consistent", "map-based")
HTTP_REUSE = ("never", "safe", "always")
LOG_FORMATS = ("json", "clf", "off")
LOG_STREAMS = ("stdout", "stderr")                  # log.access targets that are not files
COOKIE_MODES = ("insert", "rewrite", "prefix")
HEALTH_CHECK_TYPES = ("http", "tcp", "grpc")
BACKEND_PROTOCOLS = ("h1", "h2")
COMPRESSION_LEVELS = {"gzip": (1, 9), "br": (0, 11), "zstd": (1, 22)}   # the codecs' ranges
ALPN_PROTOCOLS = ("h2", "http/1.1")
SERVER_STATES = ("ready", "drain", "maint")
TLS_VERIFY = ("required", "none")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
TLS13_CIPHERSUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                      "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256",
                      "TLS_AES_128_CCM_8_SHA256")
TLS13_DEFAULT_SUITES = TLS13_CIPHERSUITES[:3]     # AES-128-GCM first: lbproxy/proxy/tls.py
TABLE_TYPES = ("ip", "ipv6", "string", "integer")
STORE_RATES = ("http_req_rate", "http_err_rate", "conn_rate")      # need a period: NAME(10s)
STORE_COUNTERS = ("http_req_cnt", "http_err_cnt", "conn_cur", "conn_cnt")
RETRY_EVENTS = ("connect-failure", "empty-response", "response-timeout", "0-rtt-rejected",
                "junk-response")
PROVIDER_TYPES = ("process", "exec", "docker", "kubernetes")
POLICIES = ("target", "threshold")
TRENDS = ("piecewise", "linear")
METRIC_TYPES = ("requests_per_second_per_server", "response_time_p95", "in_flight_per_server",
                "cpu_utilization", "memory_utilization")
DURATION_METRICS = ("response_time_p95",)            # their values are durations (seconds)


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP host:port (host "" = all interfaces) or, with `unix` set, a Unix socket path."""

    host: str
    port: int
    unix: str | None = None

    def __str__(self) -> str:
        if self.unix is not None:
            return f"unix:{self.unix}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


# --- global, defaults, stats ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogConfig:
    access: str = "stdout"          # stdout | stderr | a file path (absolute once loaded)
    format: str = "json"
    buffer: int = 8 * 1024 * 1024   # bytes that may wait for a slow target; more are dropped


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    workers: int = 1                # "auto" in YAML becomes os.cpu_count()
    max_connections: int = 20000
    pidfile: str | None = None
    stick_store: str = "memory"     # or a redis:// / rediss:// URL
    log: LogConfig = LogConfig()
    plugins: tuple[str, ...] = ()   # module names, or absolute paths of .py files


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    connect: float = 5.0
    client: float = 30.0
    server: float = 30.0
    http_request: float = 10.0
    http_keep_alive: float = 60.0
    queue: float = 10.0


@dataclass(frozen=True, slots=True)
class DefaultsConfig:
    timeouts: TimeoutsConfig = TimeoutsConfig()
    retries: int = 3
    redispatch: bool = True


@dataclass(frozen=True, slots=True)
class AuthConfig:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class StatsConfig:
    bind: Address
    uri: str = "/stats"
    refresh: float = 30.0
    auth: AuthConfig | None = None
    admin: bool = False


# --- stick tables ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoreItem:
    name: str                       # e.g. "http_req_rate"
    period: float | None = None     # seconds for rates, None for counters


@dataclass(frozen=True, slots=True)
class StickTableConfig:
    name: str                       # the key under stick_tables, or the owning section's name
    type: str
    size: int
    expire: float
    store: tuple[StoreItem, ...] = ()
    where: str = ""


# --- frontends ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CertConfig:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class BindTLSConfig:
    certificates: tuple[CertConfig, ...]
    min_version: str = "TLSv1.2"
    ciphers: str | None = None
    ciphersuites: tuple[str, ...] = TLS13_DEFAULT_SUITES   # TLS 1.3, preferred first
    alpn: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True)
class BindConfig:
    address: Address
    tls: BindTLSConfig | None = None
    h2c: bool = False               # cleartext HTTP/2 with prior knowledge, beside HTTP/1.1
    where: str = ""


@dataclass(frozen=True, slots=True)
class Http2Config:
    max_concurrent_streams: int = 100
    initial_window_size: int = 1 << 20
    max_header_list_size: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_header_size: int = 32768
    max_headers: int = 100
    max_body_size: int = 0          # 0 = unlimited


@dataclass(frozen=True, slots=True)
class ForwardedConfig:
    x_forwarded_for: bool = True
    x_forwarded_proto: bool = True
    x_forwarded_host: bool = True
    trusted_proxies: tuple[str, ...] = ()   # IPs or CIDRs, validated, as written


@dataclass(frozen=True, slots=True)
class AclConfig:
    name: str
    patterns: tuple[str, ...]       # raw "FETCH [FLAGS] [OPERATOR] VALUE..." strings, ORed
    where: str = ""


@dataclass(frozen=True, slots=True)
class DenyArgs:
    status: int = 403
    body: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class ReturnArgs:
    status: int = 200
    body: str | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RedirectArgs:
    location: str | None = None     # exactly one of location / prefix / scheme is set
    prefix: str | None = None
    scheme: str | None = None
    code: int = 302


@dataclass(frozen=True, slots=True)
class HeaderArgs:
    name: str
    value: str | None = None        # None only for del_header


@dataclass(frozen=True, slots=True)
class ReplacePathArgs:
    regex: str                      # known to compile
    replace: str


@dataclass(frozen=True, slots=True)
class AuthCacheArgs:
    ttl: float                      # how long an allow answer is reused
    key: str = "%[hdr(authorization)]"   # a template: requests with the same key share it


@dataclass(frozen=True, slots=True)
class AuthRequestArgs:
    backend: str                    # where the subrequests go
    path: str = "/"
    copy_headers: tuple[str, ...] = ()   # from an allow answer into the request
    cache: AuthCacheArgs | None = None


@dataclass(frozen=True, slots=True)
class UniqueIdConfig:
    header: str = "X-Request-ID"    # sent to the server with the id (kept from trusted peers)
    format: str = "%[uuid]"         # a template


@dataclass(frozen=True, slots=True)
class TrackArgs:
    counter: int                    # 0, 1 or 2 (track_sc0..2)
    key: str                        # a fetch, e.g. "src"
    table: str | None = None        # None = the enclosing section's own stick_table


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One http_request/http_response rule. `args` type depends on `action` (see above)."""

    action: str
    args: object = None
    cond: str | None = None         # the raw `if:`/`unless:` expression
    negate: bool = False            # True for `unless:`
    where: str = ""


@dataclass(frozen=True, slots=True)
class UseBackendConfig:
    backend: str
    cond: str | None = None
    negate: bool = False
    where: str = ""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    name: str                       # its key under caches
    size: int = 256 * 1024 * 1024   # heads and bodies in memory; least recently used go first
    max_object_size: int = 1024 * 1024    # a larger response passes through unstored
    default_ttl: float = 0.0        # freshness of a response that gives none (0: not stored)
    stale_if_error: float = 60.0    # serve an entry stale up to this long when servers fail
    lock: bool = True               # concurrent misses for one URL wait for a single fetch


@dataclass(frozen=True, slots=True)
class CompressionConfig:
    algorithms: tuple[str, ...] = ("zstd", "br", "gzip")    # preference order, for ties
    types: tuple[str, ...] = ("text/*", "application/json", "application/javascript",
                              "image/svg+xml")
    min_size: int = 1024            # a response known to be shorter is sent as it is
    level: dict[str, int] = field(default_factory=dict)     # else gzip 6, br 4, zstd 3


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    name: str
    bind: tuple[BindConfig, ...]
    accept_proxy: bool = False
    maxconn: int = 0
    timeouts: TimeoutsConfig = TimeoutsConfig()
    limits: LimitsConfig = LimitsConfig()
    forwarded: ForwardedConfig = ForwardedConfig()
    http2: Http2Config = Http2Config()
    compression: CompressionConfig | None = None
    unique_id: UniqueIdConfig | None = None
    acls: dict[str, AclConfig] = field(default_factory=dict)
    stick_table: StickTableConfig | None = None
    http_request: tuple[RuleConfig, ...] = ()
    http_response: tuple[RuleConfig, ...] = ()
    use_backend: tuple[UseBackendConfig, ...] = ()
    default_backend: str | None = None
    where: str = ""


# --- backends -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CookieConfig:
    name: str = "SERVERID"
    mode: str = "insert"
    indirect: bool = True
    nocache: bool = True
    httponly: bool = True
    secure: bool = False
    max_age: float = 0.0
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    type: str = "http"
    method: str = "GET"
    path: str = "/health"
    host: str | None = None
    expect_status: tuple[int, int] = (200, 399)     # inclusive range
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    port: int | None = None
    service: str = ""               # grpc: the service asked about ("": the server as a whole)


@dataclass(frozen=True, slots=True)
class PassiveConfig:
    max_fails: int = 3
    fail_timeout: float = 10.0
    on_status: tuple[int, ...] = (502, 503, 504)


@dataclass(frozen=True, slots=True)
class ServerTLSConfig:
    verify: str = "required"
    sni: str | None = None
    ca: str | None = None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str
    address: Address                # unix sockets allowed
    weight: int = 1
    maxconn: int = 0
    backup: bool = False
    cookie: str | None = None       # None = the server's name
    slowstart: float = 0.0
    state: str = "ready"
    tls: ServerTLSConfig | None = None
    where: str = ""


@dataclass(frozen=True, slots=True)
class ServerTemplateConfig:
    prefix: str
    count: int
    fqdn: str
    port: int | None = None
    resolve_interval: float = 10.0
    nameservers: tuple[str, ...] = ()
    where: str = ""


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    balance: str = "roundrobin"
    balance_arg: str | None = None  # NAME of url_param(NAME) / hdr(NAME)
    hash_type: str = "consistent"
    cookie: CookieConfig | None = None
    health_check: HealthCheckConfig | None = None
    passive: PassiveConfig | None = None
    retries: int = 3
    # junk-response is left out, as HAProxy advises: an invalid answer usually means a wrong
    # port or a request that breaks the server, and retrying sends it to the next one.
    retry_on: tuple[str | int, ...] = ("connect-failure", "empty-response", 502, 503)
    redispatch: bool = True
    http_reuse: str = "safe"
    maxconn: int = 0
    proto: str = "h1"               # h2: HTTP/2 to the servers (h2c, or ALPN h2 over TLS)
    max_response_header_size: int = 65536    # a larger response head is a 502
    compression: CompressionConfig | None = None    # replaces the frontend's
    cache: str | None = None        # a cache of the top-level caches: section
    timeouts: TimeoutsConfig = TimeoutsConfig()
    servers: tuple[ServerConfig, ...] = ()
    server_template: ServerTemplateConfig | None = None
    stick_table: StickTableConfig | None = None
    where: str = ""


# --- autoscale ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AutoscaleApiConfig:
    url: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    type: str = "process"
    command: str | None = None      # process
    host: str = "127.0.0.1"
    ports: tuple[int, int] | None = None     # inclusive range, "9100-9199"
    keep_on_exit: bool = False
    create: str | None = None       # exec
    destroy: str | None = None
    image: str | None = None        # docker
    socket: str | None = None
    network: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None    # kubernetes
    deployment: str | None = None
    api_url: str | None = None


@dataclass(frozen=True, slots=True)
class MetricConfig:
    type: str
    target: float | None = None     # policy target; seconds for response_time_p95
    threshold_high: float | None = None     # policy threshold
    threshold_low: float | None = None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ScaleConfig:
    cooldown: float
    max_step: int
    factor: float
    stabilization: float


SCALE_UP = ScaleConfig(cooldown=15.0, max_step=4, factor=1.5, stabilization=0.0)
SCALE_DOWN = ScaleConfig(cooldown=60.0, max_step=1, factor=0.5, stabilization=120.0)


@dataclass(frozen=True, slots=True)
class PredictiveConfig:
    enabled: bool = False
    window: float = 600.0
    horizon: float = 60.0
    min_r2: float = 0.6
    min_fill: float = 0.5           # share of the window the samples must span
    confidence: float = 0.95        # one-sided t test on the trend's slope
    trend: str = "piecewise"        # piecewise | linear


@dataclass(frozen=True, slots=True)
class PoolConfig:
    backend: str                    # the pool's key: an existing backend
    provider: ProviderConfig
    min: int = 1
    max: int = 10
    interval: float = 5.0
    policy: str = "target"
    metrics: tuple[MetricConfig, ...] = field(kw_only=True)     # required, at least one
    tolerance: float = 0.1
    scale_up: ScaleConfig = SCALE_UP
    scale_down: ScaleConfig = SCALE_DOWN
    predictive: PredictiveConfig = PredictiveConfig()
    drain_timeout: float = 30.0
    score_trigger: float = 0.5
    where: str = ""


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    api: AutoscaleApiConfig
    pools: dict[str, PoolConfig] = field(default_factory=dict)


# --- the whole file -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Config:
    global_: GlobalConfig = GlobalConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    stats: StatsConfig | None = None
    stick_tables: dict[str, StickTableConfig] = field(default_factory=dict)
    caches: dict[str, CacheConfig] = field(default_factory=dict)
    frontends: dict[str, FrontendConfig] = field(default_factory=dict)
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    autoscale: AutoscaleConfig | None = None
    sources: tuple[str, ...] = ()   # the files read, in merge order
