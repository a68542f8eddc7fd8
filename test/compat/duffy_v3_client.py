"""Speaks to a running Duffy as Duffy v3's own client (duffy/client/main.py), its CLI's formatter and the legacy cico
callers do, byte for byte where it matters, and parses every answer with Duffy v3's pydantic models.

    python3 test/compat/duffy_v3_client.py http://localhost:8080 admin <admin-key>

Prints one line per check and exits 1 if any failed. Needs python3 with pydantic 2 (no httpx: urllib sends what
httpx would: Basic auth, a JSON body from the pydantic model's model_dump(), nulls included)."""

import base64
import json
import sys
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, __import__("os").path.dirname(__file__))
import duffy_v3_models as m  # noqa: E402

URL, ADMIN, ADMIN_KEY = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
failures = []


def call(method, path, auth=None, body=None, base="/api/v1"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def check(name, status, body, want_status, model=None):
    """Duffy v3's client: an unexpected status is read as DuffyAPIErrorModel(error=body); else the model parses it."""
    problems = []
    if status != want_status:
        problems.append(f"status {status}, Duffy v3 answers {want_status}")
    try:
        if model is m.DuffyAPIErrorModel:
            m.DuffyAPIErrorModel(error=body)
        elif model is not None:
            model.model_validate(body)
    except Exception as exc:  # pydantic.ValidationError or a TypeError
        problems.append(f"{model.__name__}: {exc}".replace("\n", " | ")[:600])
    print(("ok   " if not problems else "FAIL ") + name + ("" if not problems else ": " + "; ".join(problems)))
    if problems:
        failures.append(name)
    return body


A = (ADMIN, ADMIN_KEY)
name = "compat-" + uuid.uuid4().hex[:8]

# Tenants (admin; Duffy v3's TenantCreateModel, nulls as a pydantic client sends them)
s, b = call("POST", "/tenants", A, {"name": name, "is_admin": None, "ssh_key": "ssh-ed25519 AAAA compat", "node_quota": 4, "session_lifetime": None, "session_lifetime_max": None})
tenant = check("POST /tenants -> 201 TenantCreateResult", s, b, 201, m.TenantCreateResult)["tenant"]
T = (name, tenant["api_key"])
s, b = call("GET", "/tenants", A)
check("GET /tenants -> TenantResultCollection", s, b, 200, m.TenantResultCollection)
s, b = call("GET", f"/tenants/{tenant['id']}", T)
check("GET /tenants/{own id} -> TenantResult", s, b, 200, m.TenantResult)
upd = m.TenantUpdateModel(node_quota=5).model_dump(mode="json")
s, b = call("PUT", f"/tenants/{tenant['id']}", A, upd)
check(f"PUT /tenants/{{id}} {json.dumps(upd)} -> TenantUpdateResult", s, b, 200, m.TenantUpdateResult)

# Pools (the client sends its credentials everywhere)
s, b = call("GET", "/pools", T)
pools = check("GET /pools -> PoolResultCollection", s, b, 200, m.PoolResultCollection)["pools"]
pool = pools[0]["name"]
s, b = call("GET", f"/pools/{pool}", T)
got = check("GET /pools/{name} -> PoolResult (verbose)", s, b, 200, m.PoolResult)
if not isinstance(m.PoolResult.model_validate(got).pool, m.PoolVerboseModel):
    print("FAIL GET /pools/{name}: not parsed as PoolVerboseModel")
    failures.append("pool verbose")
s, b = call("GET", "/pools/no-such-pool", T)
check("GET /pools/unknown -> 404 {detail: str}", s, b, 404, m.DuffyAPIErrorModel)

# Sessions, as DuffyClient.request_session / list_sessions / show_session / retire_session send them
create = m.SessionCreateModel(**{"nodes_specs": [{"pool": "vm-intel-x86_64", "quantity": "1"}]}).model_dump()
s, b = call("POST", "/sessions", T, create)
session = check(f"POST /sessions {json.dumps(create)} -> 201 SessionResult", s, b, 201, m.SessionResult)["session"]
s, b = call("GET", "/sessions", T)
check("GET /sessions -> SessionResultCollection", s, b, 200, m.SessionResultCollection)
s, b = call("GET", f"/sessions/{session['id']}", T)
check("GET /sessions/{id} -> SessionResult", s, b, 200, m.SessionResult)
s, b = call("PUT", f"/sessions/{session['id']}", T, {"active": None, "expires_at": "+1h"})
check('PUT /sessions/{id} {"active": null, "expires_at": "+1h"} -> SessionResult', s, b, 200, m.SessionResult)
# A body built by v3's models, as a Python script would: the duration as v3 writes it ("+1h30m"), and a Unix time as a number.
extend = m.SessionUpdateModel(expires_at="+1h30m").model_dump(mode="json")
s, b = call("PUT", f"/sessions/{session['id']}", T, extend)
check(f"PUT /sessions/{{id}} {json.dumps(extend)} -> SessionResult", s, b, 200, m.SessionResult)
s, b = call("PUT", f"/sessions/{session['id']}", T, {"expires_at": 1893456000})
check('PUT /sessions/{id} {"expires_at": 1893456000} -> SessionResult', s, b, 200, m.SessionResult)
retire = m.SessionUpdateModel(active=False).model_dump()
s, b = call("PUT", f"/sessions/{session['id']}", T, retire)
done = check(f"PUT /sessions/{{id}} {json.dumps(retire)} -> SessionResult", s, b, 200, m.SessionResult)
if done.get("session", {}).get("active") is not False:
    print("FAIL retire-session: session still active")
    failures.append("retire")
bad = m.SessionCreateModel(**{"nodes_specs": [{"pool": "no-such-pool", "quantity": 1}]}).model_dump()
s, b = call("POST", "/sessions", T, bad)
check("POST /sessions unknown pool -> 422 {detail: str}", s, b, 422, m.DuffyAPIErrorModel)
big = m.SessionCreateModel(**{"nodes_specs": [{"pool": "vm-intel-x86_64", "quantity": 50}]}).model_dump()
s, b = call("POST", "/sessions", T, big)
check("POST /sessions over quota -> 403 {detail: str}", s, b, 403, m.DuffyAPIErrorModel)
s, b = call("GET", "/sessions/999999", T)
check("GET /sessions/unknown -> 404 {detail: str}", s, b, 404, m.DuffyAPIErrorModel)
s, b = call("GET", "/sessions/1", (name, str(uuid.uuid4())))
check("wrong key -> 401 {detail: str}", s, b, 401, m.DuffyAPIErrorModel)

# Nodes (admin)
s, b = call("GET", "/nodes", A)
nodes = check("GET /nodes -> NodeResultCollection", s, b, 200, m.NodeResultCollection)["nodes"]
s, b = call("GET", f"/nodes/{nodes[0]['id']}", A)
check("GET /nodes/{id} -> NodeResult", s, b, 200, m.NodeResult)
node = m.NodeCreateModel(hostname=f"{name}.lab", ipaddr="10.99.0.7", pool=pool).model_dump(mode="json")
s, b = call("POST", "/nodes", A, node)
check(f"POST /nodes {json.dumps(node)} -> 201 NodeResult", s, b, 201, m.NodeResult)

# Legacy cico calls (duffy/legacy/main.py: what cico and curl scripts read)
def legacy(path):
    return call("GET", path, base="")


def shape(name, status, body, ok):
    good = status == 200 and ok(body)
    print(("ok   " if good else "FAIL ") + name + ("" if good else f": {status} {json.dumps(body)[:200]}"))
    if not good:
        failures.append(name)
    return body


key = T[1]
s, got = legacy(f"/Node/get?key={key}&ver=7&arch=x86_64&count=1")
shape("/Node/get -> {ssid: int, hosts: [str]}", s, got, lambda b: isinstance(b, dict) and sorted(b) == ["hosts", "ssid"] and isinstance(b["ssid"], int) and all(isinstance(h, str) for h in b["hosts"]) and len(b["hosts"]) == 1)
s, b = legacy(f"/Inventory?key={key}")
shape("/Inventory?key -> [[hostname, ssid]]", s, b, lambda b: [got["hosts"][0], got["ssid"]] in b)
s, b = legacy(f"/Node/fail?key={key}&ssid={got['ssid']}")
shape('/Node/fail -> "Done"', s, b, lambda b: b == "Done")
s, b = legacy(f"/Node/done?key={key}&ssid={got['ssid']}")
shape('/Node/done -> "Done"', s, b, lambda b: b == "Done")
s, b = legacy(f"/Node/done?key={key}")
shape('/Node/done without ssid -> "Some parameters are absent"', s, b, lambda b: b == "Some parameters are absent")
s, b = legacy(f"/Node/get?key={key}&count=99")
shape('/Node/get over quota -> "Failed to allocate nodes"', s, b, lambda b: b == "Failed to allocate nodes")
# A keyless /Inventory: every active session's nodes as Duffy v3's 14 columns (python-cicoclient's full inventory,
# which its node get, inventory and node done read), the session just taken included.
s, got = legacy(f"/Node/get?key={key}&ver=7&arch=x86_64&count=1")
s, b = legacy("/Inventory")
shape("/Inventory without a key -> 14-column rows", s, b, lambda b: isinstance(b, list) and all(isinstance(r, list) and len(r) == 14 for r in b) and any(r[1] == got["hosts"][0] and r[6] == str(got["ssid"]) for r in b))
legacy(f"/Node/done?key={key}&ssid={got['ssid']}")

# Retiring a tenant (TenantRetireModel)
s, b = call("PUT", f"/tenants/{tenant['id']}", A, {"active": False})
check('PUT /tenants/{id} {"active": false} -> TenantUpdateResult', s, b, 200, m.TenantUpdateResult)

print(f"{len(failures)} failed" if failures else "all answers parse with Duffy v3's models")
sys.exit(1 if failures else 0)
