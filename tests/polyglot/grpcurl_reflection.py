#!/usr/bin/env python3
"""grpcurl against `codeops serve all` through server reflection only.

No proto files: everything grpcurl knows (services, messages, the
google.rpc error details it prints) comes from the servers' reflection, as
for an operator with nothing but the binary and an address. Python's
standard library drives grpcurl and checks its output; nothing else.

Environment: GRPCURL (the grpcurl binary), CODEOPS_IDENTITY_ADDR,
CODEOPS_PLANNING_ADDR, CODEOPS_DECISION_ADDR (host:port).
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

GRPCURL = os.environ.get("GRPCURL", "grpcurl")
IDENTITY = os.environ.get("CODEOPS_IDENTITY_ADDR", "127.0.0.1:50051")
PLANNING = os.environ.get("CODEOPS_PLANNING_ADDR", "127.0.0.1:50052")
DECISION = os.environ.get("CODEOPS_DECISION_ADDR", "127.0.0.1:50053")
RUN = uuid.uuid4().hex[:8]

# grpcurl's exit code for a call that ended with a non-OK status.
EXIT_STATUS_BASE = 64
CODES = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "PERMISSION_DENIED": 7, "UNAUTHENTICATED": 16}

step_no = 0


def step(what):
    global step_no
    step_no += 1
    print(f"[grpcurl {step_no:02d}] {what}", flush=True)


def grpcurl(*args, token=None, data=None, expect_code=None):
    cmd = [GRPCURL, "-plaintext", "-max-time", "30"]
    if token:
        cmd += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    shown = " ".join(a if len(a) < 80 else a[:40] + "..." for a in cmd[1:])
    want = 0 if expect_code is None else EXIT_STATUS_BASE + CODES[expect_code]
    assert proc.returncode == want, (
        f"grpcurl {shown}: exit {proc.returncode}, expected {want} ({expect_code or 'OK'})\n"
        f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc.stdout if expect_code is None else proc.stderr


def call(addr, method, token=None, data=None):
    out = grpcurl(addr, method, token=token, data=data if data is not None else {})
    return json.loads(out) if out.strip() else {}


def error_details(text):
    """The details grpcurl prints under `Details:`, as JSON objects by @type."""
    details = {}
    for line in text.splitlines():
        line = line.strip()
        if line[:1].isdigit() and ")" in line:
            body = line.split(")", 1)[1].strip()
            if body.startswith("{"):
                d = json.loads(body)
                details[d["@type"].rsplit("/", 1)[-1]] = d
    return details


def expect_error(what, addr, method, code, token=None, data=None):
    text = grpcurl(addr, method, token=token, data=data if data is not None else {}, expect_code=code)
    assert "is not recognized" not in text, f"{what}: grpcurl could not decode a detail via reflection:\n{text}"
    details = error_details(text)
    info = details.get("google.rpc.ErrorInfo")
    assert info, f"{what}: grpcurl printed no google.rpc.ErrorInfo:\n{text}"
    assert info.get("domain") == "codeops", f"{what}: ErrorInfo {info}"
    return text, details


def main():
    started = time.monotonic()
    version = subprocess.run([GRPCURL, "-version"], capture_output=True, text=True)
    print(f"using {GRPCURL}: {(version.stdout + version.stderr).strip()}")

    step("list: every port names its services, health and nothing else")
    expected = {
        IDENTITY: {
            "codeops.identity.v1.AuditService",
            "codeops.identity.v1.AuthService",
            "codeops.identity.v1.InternalService",
            "codeops.identity.v1.RoleService",
            "codeops.identity.v1.TeamService",
            "codeops.identity.v1.TenantService",
            "codeops.identity.v1.UserService",
        },
        PLANNING: {"codeops.planning.v1.HypothesisService", "codeops.planning.v1.OutcomeService"},
        DECISION: {
            "codeops.decision.v1.CommentService",
            "codeops.decision.v1.DecisionService",
            "codeops.decision.v1.StakeholderService",
        },
    }
    for addr, services in expected.items():
        listed = set(grpcurl(addr, "list").split())
        listed.discard("grpc.reflection.v1.ServerReflection")
        listed.discard("grpc.reflection.v1alpha.ServerReflection")
        assert listed == services | {"grpc.health.v1.Health"}, f"list on {addr}: {sorted(listed)}"

    step("describe a service (methods, streaming, comments) and messages")
    text = grpcurl(DECISION, "describe", "codeops.decision.v1.DecisionService")
    assert "codeops.decision.v1.DecisionService is a service:" in text, text
    assert (
        "rpc WatchDecisions ( .codeops.decision.v1.WatchDecisionsRequest ) returns ( stream .codeops.decision.v1.DecisionEvent );"
        in text
    ), f"describe DecisionService lacks the streaming WatchDecisions:\n{text}"
    assert "Permission: decision.write" in text, "describe DecisionService: the method comments are not served"
    text = grpcurl(PLANNING, "describe", "codeops.planning.v1.Outcome")
    assert "codeops.planning.v1.Outcome is a message:" in text and "string etag = 16" in text, text
    assert "string created_by_id = 23 [(.google.api.field_behavior) = OUTPUT_ONLY];" in text, (
        f"describe Outcome: field_behavior annotations are not served:\n{text}"
    )
    text = grpcurl(PLANNING, "describe", "google.rpc.BadRequest")
    assert "google.rpc.BadRequest is a message:" in text and "FieldViolation" in text, text

    step("Login (identity)")
    login = call(
        IDENTITY,
        "codeops.identity.v1.AuthService/Login",
        data={"tenant_slug": "acme", "email": "alice@acme.test", "password": "password123"},
    )
    token = login["tokens"]["accessToken"]
    assert login["user"]["roleCode"] == "OWNER", login["user"]
    viewer = call(
        IDENTITY,
        "codeops.identity.v1.AuthService/Login",
        data={"tenant_slug": "acme", "email": "dan@acme.test", "password": "password123"},
    )["tokens"]["accessToken"]

    step("health through grpcurl, per server and per service")
    for addr, svc in (
        (IDENTITY, "codeops.identity.v1.UserService"),
        (PLANNING, "codeops.planning.v1.HypothesisService"),
        (DECISION, "codeops.decision.v1.CommentService"),
    ):
        for name in ("", svc):
            got = call(addr, "grpc.health.v1.Health/Check", data={"service": name})
            assert got.get("status") == "SERVING", f"health of {name or addr}: {got}"

    step("identity: GetCurrentUser")
    me = call(IDENTITY, "codeops.identity.v1.AuthService/GetCurrentUser", token=token)
    assert me["email"] == "alice@acme.test", me

    step("WatchDecisions through grpcurl, opened before the change")
    watch = subprocess.Popen(
        [GRPCURL, "-plaintext", "-v", "-max-time", "30", "-H", f"authorization: Bearer {token}", "-d", "{}",
         DECISION, "codeops.decision.v1.DecisionService/WatchDecisions"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in watch.stdout], daemon=True).start()
    seen = []

    def read_until(marker, secs=15):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                assert watch.poll() is None, f"grpcurl WatchDecisions ended early:\n{''.join(seen)}"
                continue
            seen.append(line)
            if marker in line:
                return
        raise AssertionError(f"grpcurl WatchDecisions: no {marker!r} within {secs}s:\n{''.join(seen)}")

    try:
        read_until("Response headers received")

        step("planning: CreateOutcome, ListOutcomes")
        outcome = call(
            PLANNING,
            "codeops.planning.v1.OutcomeService/CreateOutcome",
            token=token,
            data={"outcome": {"title": f"grpcurl outcome {RUN}", "priority": "OUTCOME_PRIORITY_MEDIUM"}},
        )
        assert outcome["status"] == "OUTCOME_STATUS_DRAFT", outcome
        page = call(PLANNING, "codeops.planning.v1.OutcomeService/ListOutcomes", token=token, data={"page_size": 5})
        assert outcome["id"] in [o["id"] for o in page["outcomes"]], "the new outcome is not listed"

        step("decision: CreateDecision; the watch prints its CREATED event")
        decision = call(
            DECISION,
            "codeops.decision.v1.DecisionService/CreateDecision",
            token=token,
            data={
                "decision": {
                    "title": f"grpcurl decision {RUN}",
                    "priority": "DECISION_PRIORITY_LOW",
                    "options": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}],
                }
            },
        )
        assert decision["status"] == "DECISION_STATUS_NEEDS_INPUT", decision
        read_until(f'"decisionId": "{decision["id"]}"')
        event = "".join(seen).rsplit("Response contents:", 1)[-1]
        assert '"eventType": "DECISION_EVENT_TYPE_CREATED"' in event, f"the watch printed:\n{event}"
    finally:
        watch.terminate()
        watch.wait(10)

    step("an error's details, rendered by grpcurl: BadRequest field violations")
    text, details = expect_error(
        "CreateOutcome without title and priority",
        PLANNING,
        "codeops.planning.v1.OutcomeService/CreateOutcome",
        "INVALID_ARGUMENT",
        token=token,
        data={"outcome": {"target_date": "someday"}},
    )
    assert details["google.rpc.ErrorInfo"]["reason"] == "FIELD_VIOLATIONS", text
    violations = details.get("google.rpc.BadRequest", {}).get("fieldViolations", [])
    fields = {v["field"] for v in violations}
    assert {"outcome.title", "outcome.priority", "outcome.target_date"} <= fields, f"violations {violations}:\n{text}"

    step("an error's details, rendered by grpcurl: ErrorInfo PERMISSION_MISSING")
    text, details = expect_error(
        "ResolveDecision as a VIEWER",
        DECISION,
        "codeops.decision.v1.DecisionService/ResolveDecision",
        "PERMISSION_DENIED",
        token=viewer,
        data={"id": decision["id"], "selected_option_id": "a", "rationale": "r"},
    )
    info = details["google.rpc.ErrorInfo"]
    assert info["reason"] == "PERMISSION_MISSING" and info["metadata"]["permission"] == "decision.resolve", text

    step("an error's details, rendered by grpcurl: NOT_FOUND with ResourceInfo")
    text, details = expect_error(
        "GetHypothesis of an unknown id",
        PLANNING,
        "codeops.planning.v1.HypothesisService/GetHypothesis",
        "NOT_FOUND",
        token=token,
        data={"id": str(uuid.uuid4())},
    )
    assert details["google.rpc.ErrorInfo"]["reason"] == "RESOURCE_NOT_FOUND", text
    assert details.get("google.rpc.ResourceInfo", {}).get("resourceType") == "hypothesis", text

    step("logout")
    call(IDENTITY, "codeops.identity.v1.AuthService/Logout", token=token)
    call(IDENTITY, "codeops.identity.v1.AuthService/Logout", token=viewer)
    print(f"grpcurl: all {step_no} steps passed in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"\nGRPCURL SCENARIO FAILED at step {step_no}: {e}", file=sys.stderr)
        sys.exit(1)
