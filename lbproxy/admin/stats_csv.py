"""The stats as HAProxy's CSV (`/stats;csv`) and as JSON objects with the same fields.

Columns are HAProxy 3.0's general `show stat` columns, in HAProxy's order, so existing
tooling (Zabbix templates, exporters, scripts that cut by column name) reads them. A
column lbproxy has no value for is left empty, as HAProxy does for fields that do not
apply. Rows come per proxy as in HAProxy: a FRONTEND row per frontend; per backend, a
row per server then a BACKEND row. Mapping choices:

- sessions (`scur`, `smax`, `stot`): connections on frontends, requests in flight / sent
  on servers and backends (a request is HAProxy's unit of work on the server side).
- `rate` and `req_rate` are requests per second over the sampler's window; `rtime` is the
  recent average response time in ms.
- `chkfail` counts the server's failures (connect errors, timeouts, invalid responses).
- backend `bin`/`bout` add up its current servers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lbproxy.admin.model import Recent, Sampler, backend_up, frontend_status, queue_length
from lbproxy.slicing import Sliced, at_once, mapped

if TYPE_CHECKING:
    from lbproxy.backends.backend import Backend
    from lbproxy.backends.server import Server
    from lbproxy.proxy.frontend import Frontend
    from lbproxy.runtime.engine import Engine

COLUMNS = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,"
    "conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,"
    "cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,"
    "safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,srid,sess_other,h1sess,h2sess,h3sess,req_other,"
    "h1req,h2req,h3req,proto"
).split(",")
TYPE_FRONTEND, TYPE_BACKEND, TYPE_SERVER = 0, 1, 2
PID = 1                       # HAProxy's relative process number; one process here

Row = dict[str, str | int]


def stat_rows(engine: Engine, sampler: Sampler) -> Sliced[list[Row]]:
    """Every row, HAProxy's order; only the columns that have a value (a sliced renderer:
    lbproxy/slicing.py)."""
    rows: list[Row] = []
    for iid, frontend in enumerate(engine.frontends.values(), 1):
        rows.append(_frontend_row(frontend, iid, sampler.recent(frontend)))
    for iid, backend in enumerate(list(engine.backends.values()), len(engine.frontends) + 1):
        rows += yield from mapped(
            enumerate(list(backend.servers), 1),
            lambda numbered: _server_row(backend, numbered[1], iid,  # noqa: B023
                                         numbered[0], sampler.recent(numbered[1])))
        rows.append(_backend_row(backend, iid, (yield from sampler.backend_recent(backend))))
    return rows


def csv_lines(rows: list[Row]) -> Sliced[list[str]]:
    """HAProxy's layout: a `# ` header line, and a trailing comma on every line. Names are
    config names (no commas or quotes), so no quoting is needed."""
    lines = yield from mapped(rows, lambda row: ",".join(
        _cell(row.get(column)) for column in COLUMNS) + ",\n")
    return ["# " + ",".join(COLUMNS) + ",\n", *lines]


def to_csv(rows: list[Row]) -> str:
    return "".join(at_once(csv_lines(rows)))


def _cell(value: str | int | None) -> str:
    if value is None:
        return ""
    return str(value).replace(",", " ").replace("\n", " ")    # reasons are free text


def _counts(obj: Frontend | Backend | Server, recent: Recent) -> Row:
    """The columns every row type has: responses and request rates."""
    responses = obj.responses
    return {
        "hrsp_1xx": responses[1], "hrsp_2xx": responses[2], "hrsp_3xx": responses[3],
        "hrsp_4xx": responses[4], "hrsp_5xx": responses[5], "hrsp_other": responses[0],
        "req_tot": obj.requests, "rate": round(recent.rps), "rate_max": round(recent.rps_max),
        "pid": PID, "mode": "http",
    }


def _frontend_row(frontend: Frontend, iid: int, recent: Recent) -> Row:
    row: Row = {
        "pxname": frontend.name, "svname": "FRONTEND", "iid": iid, "sid": 0,
        "type": TYPE_FRONTEND, "status": frontend_status(frontend), "scur": frontend.connections,
        "smax": frontend.max_connections_seen, "stot": frontend.connections_total,
        "conn_tot": frontend.connections_total, "bin": frontend.bytes_in,
        "bout": frontend.bytes_out, "dreq": frontend.rejected,
        "req_rate": round(recent.rps), "req_rate_max": round(recent.rps_max),
        **_counts(frontend, recent),
    }
    if frontend.maxconn:
        row["slim"] = frontend.maxconn
    return row


def _server_row(backend: Backend, server: Server, iid: int, sid: int, recent: Recent) -> Row:
    row: Row = {
        "pxname": backend.name, "svname": server.name, "iid": iid, "sid": sid,
        "type": TYPE_SERVER, "status": server.state, "weight": server.weight,
        "uweight": server.config_weight, "act": int(not server.backup),
        "bck": int(server.backup), "qcur": queue_length(server), "scur": server.in_flight,
        "smax": server.max_in_flight, "stot": server.requests, "lbtot": server.requests,
        "bin": server.bytes_in, "bout": server.bytes_out, "chkfail": server.failures,
        "lastchg": int(time.time() - server.last_change), "addr": str(server.address),
        "cookie": server.cookie, **_counts(server, recent),
    }
    if server.maxconn:
        row["slim"] = server.maxconn
    if server.slowstart and server.weight < server.config_weight:
        row["throttle"] = server.weight * 100 // max(server.config_weight, 1)
    if recent.avg is not None:
        row["rtime"] = round(recent.avg * 1000)
    check = backend.config.health_check
    if check is not None:
        row.update(check_rise=check.rise, check_fall=check.fall, last_chk=server.reason)
        if server.check == "checking":
            row["check_status"] = "INI"
        elif server.check == "up":
            row["check_status"] = "L7OK" if check.type == "http" else "L4OK"
    return row


def _backend_row(backend: Backend, iid: int, recent: Recent) -> Row:
    servers = backend.servers
    usable = [server for server in servers if server.usable]
    row: Row = {
        "pxname": backend.name, "svname": "BACKEND", "iid": iid, "sid": 0,
        "type": TYPE_BACKEND, "status": "UP" if backend_up(backend) else "DOWN",
        "weight": sum(server.weight for server in usable),
        "act": sum(not server.backup for server in usable),
        "bck": sum(server.backup for server in usable),
        "qcur": queue_length(backend), "qmax": backend.max_queued, "scur": backend.in_flight,
        "stot": backend.requests, "lbtot": backend.requests,
        "bin": sum(server.bytes_in for server in servers),
        "bout": sum(server.bytes_out for server in servers),
        "wretr": backend.retried, "wredis": backend.redispatched,
        "algo": backend.config.balance, **_counts(backend, recent),
    }
    if backend.config.maxconn:
        row["slim"] = backend.config.maxconn
    if recent.avg is not None:
        row["rtime"] = round(recent.avg * 1000)
    return row

