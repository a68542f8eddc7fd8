#!/usr/bin/env python3
"""Run every playbook with the local driver, the way Duffy does, and check the results.

Usage: tests/local-e2e.py   (needs ansible-playbook; uses a temporary data_dir)
Exits non-zero on the first failed check.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANSIBLE_DIR = Path(__file__).resolve().parent.parent
MARKER = "# --- duffy session keys below: removed on release ---"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDuffyTestKey alice@ci"
HOSTS = ["n1.example.org", "n2.example.org"]
timings = []


def run(action, data_dir, policy=None, timeout=None, **extra):
    duffy_in = {
        "action": action,
        "pool": {"name": "virt-ec2-t2-centos-9s-x86_64", "type": "vm", "driver": "local",
                 "arch": "x86_64", "platform": "intel", "vars": {}},
        "session": None if action in ("provision", "health_check")
        else {"id": 12, "tenant": "alice", "ssh_key": KEY},
        "nodes": [{"id": i + 1, "hostname": h, "ipaddr": None, "data": {}} for i, h in enumerate(HOSTS)],
        "data_dir": str(data_dir),
    }
    if policy:
        duffy_in["policy"] = policy
    if action == "collect_artifacts":
        duffy_in["artifacts_dir"] = str(data_dir / "artifacts" / "session-12")
    duffy_in.update(extra)
    vars_file = data_dir / f"in-{action}.json"
    vars_file.write_text(json.dumps({"duffy_in": duffy_in}))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"))
    playbook = ANSIBLE_DIR / "playbooks" / (action.replace("_", "-") + ".yml")
    cmd = ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", f"@{vars_file}"]
    start = time.monotonic()
    # Own session, so a timeout can kill the whole process tree (workers, module, sleep).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate()
        timings.append((f"{action} (killed)", time.monotonic() - start))
        return None, proc.pid
    timings.append((action + (f" {policy}" if policy else ""), time.monotonic() - start))
    return (proc.returncode, out, err), proc.pid


def duffy_out(result):
    rc, out, err = result
    doc = json.loads(out)  # must be one JSON document
    found = [h["ansible_facts"]["duffy_out"]
             for play in doc["plays"] for task in play["tasks"]
             for h in task["hosts"].values() if "duffy_out" in h.get("ansible_facts", {})]
    check(found, f"no duffy_out in output (rc={rc}, stderr={err[-500:]})")
    return rc, found[-1]


def check(cond, msg):
    if not cond:
        print("FAIL:", msg)
        sys.exit(1)


def expect_all_ok(action, data_dir, **kw):
    rc, out = duffy_out(run(action, data_dir, **kw)[0])
    check(rc == 0, f"{action}: rc={rc}")
    check([n["hostname"] for n in out["nodes"]] == HOSTS, f"{action}: nodes {out}")
    check(all(n["ok"] is True and n["ipaddr"] is None for n in out["nodes"]), f"{action}: {out}")
    print(f"ok   {action} {kw.get('policy', '')}: {json.dumps(out)}")
    return out


def main():
    data = Path(tempfile.mkdtemp(prefix="duffy-e2e-"))
    m = {h: data / "machines" / h for h in HOSTS}
    keys = {h: m[h] / "root/.ssh/authorized_keys" for h in HOSTS}
    try:
        expect_all_ok("provision", data)
        for h in HOSTS:
            check((m[h] / "state").read_text() == "provisioned\n", "state after provision")
            check("ID=duffy-local" in (m[h] / "os-release").read_text(), "os-release")
            check((m[h] / "root/.ssh").is_dir(), "root/.ssh")

        # A machine key above the marker must survive the session.
        keys["n1.example.org"].write_text("ssh-ed25519 AAAAmachine root@n1\n")
        expect_all_ok("contextualize", data)
        expect_all_ok("contextualize", data)
        for h in HOSTS:
            lines = keys[h].read_text().splitlines()
            check(lines.count(KEY) == 1 and lines.count(MARKER) == 1, f"{h} keys after 2x contextualize: {lines}")
            check(lines.index(KEY) > lines.index(MARKER), "key below marker")
        print("ok   contextualize twice -> exactly one key copy below the marker")

        expect_all_ok("decontextualize", data)
        check(keys["n1.example.org"].read_text() == "ssh-ed25519 AAAAmachine root@n1\n", "n1 keys after decontextualize")
        check(keys["n2.example.org"].read_text() == "", "n2 keys after decontextualize")
        print("ok   decontextualize removed marker + session key, kept the machine key")

        expect_all_ok("health_check", data)

        art = m["n1.example.org"] / "root/artifacts/logs"
        art.mkdir(parents=True)
        (art / "test.log").write_text("hello\n")
        expect_all_ok("collect_artifacts", data)
        dest = data / "artifacts/session-12"
        check((dest / "n1.example.org/logs/test.log").read_text() == "hello\n", "artifact copied")
        check(not (dest / "n2.example.org").exists(), "no artifacts for n2")
        print("ok   collect_artifacts copied n1's logs/test.log")

        expect_all_ok("contextualize", data)
        expect_all_ok("release", data, policy="reuse")
        check(KEY not in keys["n2.example.org"].read_text(), "reuse drops keys")
        (m["n1.example.org"] / "inject").mkdir()
        (m["n1.example.org"] / "junk").write_text("tenant data")
        expect_all_ok("release", data, policy="rebuild")
        check(sorted(p.name for p in m["n1.example.org"].iterdir())
              == ["actions.log", "inject", "os-release", "root", "state"], "rebuild wiped the disk")
        check(not (m["n1.example.org"] / "root/artifacts").exists(), "rebuild wiped artifacts")
        expect_all_ok("release", data, policy="reinstall")
        expect_all_ok("contextualize", data)
        expect_all_ok("release", data, policy="shutdown")
        check((m["n2.example.org"] / "state").read_text() == "off\n", "shutdown -> off")
        check(KEY not in keys["n2.example.org"].read_text(), "shutdown drops the session keys")
        # What the last tenant's contextualize left on the machine it shut down: the next provision installs afresh.
        keys["n2.example.org"].write_text(f"{MARKER}\n{KEY}\n")

        log = [line.split(" ", 1)[1] for line in (m["n2.example.org"] / "actions.log").read_text().splitlines()]
        check(log == ["provision", "contextualize", "contextualize", "decontextualize", "health_check",
                      "collect_artifacts", "contextualize", "release reuse", "release rebuild",
                      "release reinstall", "contextualize", "release shutdown"], f"actions.log: {log}")
        print("ok   actions.log:", log)

        # Injected failure: n1 fails with the file's content, n2 still gets provisioned.
        (m["n1.example.org"] / "inject/fail-provision").write_text("disk on fire\n")
        (m["n2.example.org"] / "state").write_text("off\n")
        rc, out = duffy_out(run("provision", data)[0])
        check(rc == 0, f"rc with one failed node: {rc}")
        check(out["nodes"] == [
            {"hostname": "n1.example.org", "ipaddr": None, "ok": False, "error": "disk on fire"},
            {"hostname": "n2.example.org", "ipaddr": None, "note": None, "ok": True}], f"fail-provision: {out}")
        check((m["n2.example.org"] / "state").read_text() == "provisioned\n", "n2 provisioned")
        check(not keys["n2.example.org"].exists(), "a provision after shutdown leaves no earlier tenant's key")
        print("ok   inject/fail-provision:", json.dumps(out))

        # A machine whose directory does not exist is an empty disk: it passes its health check.
        shutil.rmtree(m["n2.example.org"])
        rc, out = duffy_out(run("health_check", data)[0])
        check(rc == 0 and out["nodes"][0]["ok"] and out["nodes"][1]["ok"], f"missing machine: {out}")
        print("ok   missing machine:", json.dumps(out))

        # Nor has it artifacts to fail over: a hand-over stopped before it made the directory, then released, told
        # the tenant "collection failed (machine ... does not exist)".
        shutil.rmtree(m["n2.example.org"], ignore_errors=True)
        rc, out = duffy_out(run("collect_artifacts", data)[0])
        check(rc == 0 and out["nodes"][1]["ok"], f"collect_artifacts on a missing machine: {out}")
        print("ok   collect_artifacts on a missing machine:", json.dumps(out))

        # Malformed input is a whole-run failure: non-zero exit.
        result, _ = run("release", data, policy="bogus")
        check(result[0] != 0, "bad policy must fail the run")
        print("ok   bad policy -> rc", result[0])

        # Injected hang: the run never finishes; killing its process group leaves nothing behind.
        (m["n1.example.org"] / "inject/hang-health_check").write_text("")
        result, pid = run("health_check", data, timeout=20)
        check(result is None, "hang-health_check should hang")
        time.sleep(1)
        ps = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-s", str(pid)], capture_output=True, text=True).stdout
        left = [line for line in ps.splitlines() if not line.startswith("Z")]  # zombies are dead already
        check(not left, f"processes left after killing the group: {left}")
        print("ok   inject/hang-health_check hung, killed by timeout, no processes left")
    finally:
        shutil.rmtree(data, ignore_errors=True)

    print("\ntimings:")
    for name, secs in timings:
        print(f"  {secs:6.1f}s  {name}")


if __name__ == "__main__":
    main()
