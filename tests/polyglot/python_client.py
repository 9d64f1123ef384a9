#!/usr/bin/env python3
"""A Python client nobody here wrote: the whole product, end to end.

Runs against a `codeops serve all` on a fresh, migrated and seeded database
(scripts/ci/polyglot starts one). Stubs are generated from proto/ by
grpcio-tools when this script starts, so it sees the protos exactly as a
new client author would; error details are decoded with grpcio-status and
googleapis-common-protos, as the README tells clients to.

Environment: CODEOPS_IDENTITY_ADDR, CODEOPS_PLANNING_ADDR,
CODEOPS_DECISION_ADDR (host:port), CODEOPS_REVOCATION_POLL_SECS (how long a
revoked session may keep working outside identity's writes).

Plain asserts; any failure exits non-zero with a message saying what broke.
"""

import atexit
import os
import pathlib
import queue
import shutil
import sys
import tempfile
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


# --------------------------------------------------------------------------
# Stubs, generated now from proto/ (codeops and the vendored google/rpc).
# --------------------------------------------------------------------------


def generate_stubs():
    import grpc_tools
    from grpc_tools import protoc

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    # Under scripts/ci/polyglot's work folder when it runs us (removed even
    # when we are killed), else a temporary folder of our own.
    out = pathlib.Path(tempfile.mkdtemp(prefix="stubs-", dir=os.environ.get("POLYGLOT_WORK")))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    codeops = sorted(str(p.relative_to(PROTO)) for p in PROTO.glob("codeops/**/*.proto"))
    vendored = sorted(str(p.relative_to(PROTO)) for p in PROTO.glob("google/**/*.proto"))
    assert codeops, f"no codeops protos under {PROTO}"
    assert "google/rpc/error_details.proto" in vendored, f"proto/ lacks the vendored google/rpc files: {vendored}"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
    ]
    rc = protoc.main(args + codeops)
    assert rc == 0, f"grpc_tools.protoc failed ({rc}) on {codeops}"
    # The vendored google/rpc files are compiled too, into a descriptor set
    # (not importable modules: googleapis-common-protos owns the python
    # package google.rpc, and the same file registered twice is refused).
    # check_vendored_error_details compares them with what clients decode with.
    descriptor_set = out / "vendored.pb"
    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO}", f"-I{well_known}", f"--descriptor_set_out={descriptor_set}"] + vendored
    )
    assert rc == 0, f"grpc_tools.protoc failed ({rc}) on the vendored {vendored}"
    for d in out.rglob("*"):
        if d.is_dir():
            (d / "__init__.py").touch()
    sys.path.insert(0, str(out))
    return out, descriptor_set


STUBS, VENDORED_SET = generate_stubs()

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, field_mask_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from codeops.decision.v1 import comment_pb2, comment_pb2_grpc  # noqa: E402
from codeops.decision.v1 import decision_pb2, decision_pb2_grpc  # noqa: E402
from codeops.identity.v1 import audit_pb2, audit_pb2_grpc  # noqa: E402
from codeops.identity.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402
from codeops.planning.v1 import hypothesis_pb2, hypothesis_pb2_grpc  # noqa: E402
from codeops.planning.v1 import planning_pb2, planning_pb2_grpc  # noqa: E402

IDENTITY = os.environ.get("CODEOPS_IDENTITY_ADDR", "127.0.0.1:50051")
PLANNING = os.environ.get("CODEOPS_PLANNING_ADDR", "127.0.0.1:50052")
DECISION = os.environ.get("CODEOPS_DECISION_ADDR", "127.0.0.1:50053")
REVOCATION_POLL_SECS = float(os.environ.get("CODEOPS_REVOCATION_POLL_SECS", "10"))
TIMEOUT = 30
RUN = uuid.uuid4().hex[:8]

identity_ch = grpc.insecure_channel(IDENTITY)
planning_ch = grpc.insecure_channel(PLANNING)
decision_ch = grpc.insecure_channel(DECISION)

auth = auth_pb2_grpc.AuthServiceStub(identity_ch)
audit = audit_pb2_grpc.AuditServiceStub(identity_ch)
outcomes = planning_pb2_grpc.OutcomeServiceStub(planning_ch)
hypotheses = hypothesis_pb2_grpc.HypothesisServiceStub(planning_ch)
decisions = decision_pb2_grpc.DecisionServiceStub(decision_ch)
comments = comment_pb2_grpc.CommentServiceStub(decision_ch)

step_no = 0


def step(what):
    global step_no
    step_no += 1
    print(f"[python {step_no:02d}] {what}", flush=True)


class Session:
    """An access token plus the x-request-id of every call made with it."""

    def __init__(self, tokens, user):
        self.tokens = tokens
        self.user = user
        self.request_ids = {}  # label -> x-request-id sent

    def md(self, label=None, token=None):
        rid = f"polyglot-{RUN}-{label or uuid.uuid4().hex[:8]}"
        if label:
            self.request_ids[label] = rid
        return (
            ("authorization", f"Bearer {token or self.tokens.access_token}"),
            ("x-request-id", rid),
        )


def login(email, password="password123", tenant="acme"):
    resp = auth.Login(
        auth_pb2.LoginRequest(tenant_slug=tenant, email=email, password=password),
        timeout=TIMEOUT,
    )
    assert resp.tokens.access_token, f"Login of {email}: no access token"
    assert resp.tokens.refresh_token, f"Login of {email}: no refresh token"
    assert resp.tokens.token_type == "Bearer", f"Login of {email}: token_type {resp.tokens.token_type!r}"
    assert resp.user.email == email, f"Login of {email} returned user {resp.user.email!r}"
    return Session(resp.tokens, resp.user)


def expect_error(what, fn, code):
    """Calls fn, which must fail with `code`; returns (error, Status, details by type name)."""
    try:
        fn()
    except grpc.RpcError as err:
        assert err.code() == code, f"{what}: expected {code.name}, got {err.code().name}: {err.details()}"
        status = rpc_status.from_call(err)
        assert status is not None, (
            f"{what}: {code.name} without grpc-status-details-bin (rpc_status.from_call found no google.rpc.Status)"
        )
        assert status.code == code.value[0], f"{what}: Status.code {status.code} != {code.value[0]}"
        details = {}
        for any_ in status.details:
            for cls in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.BadRequest,
                error_details_pb2.ResourceInfo,
                error_details_pb2.RetryInfo,
                error_details_pb2.PreconditionFailure,
                error_details_pb2.RequestInfo,
                error_details_pb2.Help,
                error_details_pb2.LocalizedMessage,
            ):
                if any_.Is(cls.DESCRIPTOR):
                    msg = cls()
                    any_.Unpack(msg)
                    assert cls.DESCRIPTOR.name not in details, f"{what}: two {cls.DESCRIPTOR.name} details"
                    details[cls.DESCRIPTOR.name] = msg
                    break
            else:
                raise AssertionError(f"{what}: a detail no googleapis type decodes: {any_.type_url}")
        info = details.get("ErrorInfo")
        assert info is not None, f"{what}: no google.rpc.ErrorInfo among {list(details)}"
        assert info.domain == "codeops", f"{what}: ErrorInfo.domain {info.domain!r}"
        assert info.reason, f"{what}: ErrorInfo without reason"
        return err, status, details
    raise AssertionError(f"{what}: expected {code.name}, the call succeeded")


def audit_entries(session, entity_id):
    entries, token = [], ""
    while True:
        resp = audit.ListAuditLogs(
            audit_pb2.ListAuditLogsRequest(page_size=100, page_token=token, entity_id=entity_id),
            metadata=session.md(),
            timeout=TIMEOUT,
        )
        entries.extend(resp.audit_logs)
        token = resp.next_page_token
        if not token:
            return entries


# --------------------------------------------------------------------------
# The scenario.
# --------------------------------------------------------------------------


def check_vendored_error_details():
    step("vendored proto/google/rpc/error_details.proto matches googleapis-common-protos")
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(VENDORED_SET.read_bytes())
    files = {f.name: f for f in fds.file}
    vendored = files["google/rpc/error_details.proto"]
    upstream = descriptor_pb2.FileDescriptorProto()
    error_details_pb2.DESCRIPTOR.CopyToProto(upstream)
    up = {m.name: {(f.name, f.number, f.type, f.label) for f in m.field} for m in upstream.message_type}
    for m in vendored.message_type:
        assert m.name in up, f"vendored google.rpc.{m.name} is unknown to googleapis-common-protos"
        fields = {(f.name, f.number, f.type, f.label) for f in m.field}
        missing = fields - up[m.name]
        assert not missing, f"vendored google.rpc.{m.name} fields differ from googleapis': {sorted(missing)}"


def check_health():
    step("grpc.health.v1 SERVING on every port, per server and per service")
    for addr, ch, svc in (
        (IDENTITY, identity_ch, "codeops.identity.v1.AuthService"),
        (PLANNING, planning_ch, "codeops.planning.v1.OutcomeService"),
        (DECISION, decision_ch, "codeops.decision.v1.DecisionService"),
    ):
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", svc):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, (
                f"health of {name or 'the server'} on {addr}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            )
        try:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
            raise AssertionError(f"health of no.such.Service on {addr}: answered instead of NOT_FOUND")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, f"health of no.such.Service on {addr}: {err.code().name}"


def run_planning(alice):
    step("CreateOutcome (gzip-compressed request) -> DRAFT")
    # Large and repetitive, so gzip has something to do. (No trailing blank:
    # the server trims text fields.)
    long_text = ("Customers who finish onboarding in one sitting stay. " * 200).strip()
    outcome_key = str(uuid.uuid4())
    outcome = outcomes.CreateOutcome(
        planning_pb2.CreateOutcomeRequest(
            outcome=planning_pb2.Outcome(
                title=f"Polyglot outcome {RUN}",
                description=long_text,
                success_criteria="week-1 activation at 45%",
                priority=planning_pb2.OUTCOME_PRIORITY_HIGH,
                target_date="2027-06-30",
                tags=["polyglot", "python"],
                target_metrics=[
                    planning_pb2.Metric(key="week1_activation_rate", unit="percent", baseline=31.0, target=45.0)
                ],
            ),
            request_id=outcome_key,
        ),
        metadata=alice.md("create_outcome"),
        compression=grpc.Compression.Gzip,
        timeout=TIMEOUT,
    )
    assert outcome.status == planning_pb2.OUTCOME_STATUS_DRAFT, f"new outcome: {outcome.status}"
    assert outcome.description == long_text, "the gzip-compressed description came back different"
    assert outcome.etag, "new outcome without etag"
    assert outcome.created_by_id == alice.user.id, f"created_by_id {outcome.created_by_id!r}"

    step("CreateOutcome retried with its request_id (as a mesh retries) answers the first outcome")
    retry = planning_pb2.CreateOutcomeRequest(
        outcome=planning_pb2.Outcome(
            title=f"Polyglot outcome {RUN}",
            description=long_text,
            success_criteria="week-1 activation at 45%",
            priority=planning_pb2.OUTCOME_PRIORITY_HIGH,
            target_date="2027-06-30",
            tags=["polyglot", "python"],
            target_metrics=[
                planning_pb2.Metric(key="week1_activation_rate", unit="percent", baseline=31.0, target=45.0)
            ],
        ),
        request_id=outcome_key,
    )
    again = outcomes.CreateOutcome(retry, metadata=alice.md(), timeout=TIMEOUT)
    assert again == outcome, "a retry with the same request_id created or answered something else"
    retry.outcome.title = f"Another outcome {RUN}"
    _, _, details = expect_error(
        "the request_id reused for another outcome",
        lambda: outcomes.CreateOutcome(retry, metadata=alice.md(), timeout=TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fields = [v.field for v in details["BadRequest"].field_violations]
    assert fields == ["request_id"], f"reused request_id: violations on {fields}"

    step("GetOutcome with gzip on the whole channel (requests and responses)")
    with grpc.insecure_channel(PLANNING, compression=grpc.Compression.Gzip) as gz:
        got = planning_pb2_grpc.OutcomeServiceStub(gz).GetOutcome(
            planning_pb2.GetOutcomeRequest(id=outcome.id), metadata=alice.md(), timeout=TIMEOUT
        )
        assert got == outcome, "GetOutcome over a gzip channel differs from what CreateOutcome returned"

    step("StartOutcome DRAFT -> IN_PROGRESS")
    stale_outcome_etag = outcome.etag
    outcome = outcomes.StartOutcome(
        planning_pb2.StartOutcomeRequest(id=outcome.id, etag=outcome.etag),
        metadata=alice.md("start_outcome"),
        timeout=TIMEOUT,
    )
    assert outcome.status == planning_pb2.OUTCOME_STATUS_IN_PROGRESS, f"after StartOutcome: {outcome.status}"
    assert outcome.etag != stale_outcome_etag, "StartOutcome did not change the etag"

    step("stale etag: ABORTED with ErrorInfo ETAG_MISMATCH; nothing changes")
    _, status, details = expect_error(
        "SubmitOutcomeForValidation with a stale etag",
        lambda: outcomes.SubmitOutcomeForValidation(
            planning_pb2.SubmitOutcomeForValidationRequest(id=outcome.id, etag=stale_outcome_etag),
            metadata=alice.md(),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.ABORTED,
    )
    assert details["ErrorInfo"].reason == "ETAG_MISMATCH", f"stale etag reason {details['ErrorInfo'].reason!r}"
    again = outcomes.GetOutcome(planning_pb2.GetOutcomeRequest(id=outcome.id), metadata=alice.md(), timeout=TIMEOUT)
    assert again.status == planning_pb2.OUTCOME_STATUS_IN_PROGRESS and again.etag == outcome.etag, (
        "a refused stale write changed the outcome"
    )

    step("CreateHypothesis -> DRAFT, walked to MEASURING with etags")
    hyp = hypotheses.CreateHypothesis(
        hypothesis_pb2.CreateHypothesisRequest(
            hypothesis=hypothesis_pb2.Hypothesis(
                outcome_id=outcome.id,
                title=f"Polyglot hypothesis {RUN}",
                belief="A checklist makes onboarding finish in one sitting",
                expected_result="activation rises by 5 points",
                priority=hypothesis_pb2.HYPOTHESIS_PRIORITY_HIGH,
                experiment_config=hypothesis_pb2.ExperimentConfig(
                    type=hypothesis_pb2.EXPERIMENT_TYPE_AB_TEST,
                    primary_metric="week1_activation_rate",
                    split={"control": 50.0, "treatment": 50.0},
                ),
            )
        ),
        metadata=alice.md("create_hypothesis"),
        timeout=TIMEOUT,
    )
    assert hyp.status == hypothesis_pb2.HYPOTHESIS_STATUS_DRAFT, f"new hypothesis: {hyp.status}"
    assert dict(hyp.experiment_config.split) == {"control": 50.0, "treatment": 50.0}, (
        f"experiment split came back as {dict(hyp.experiment_config.split)}"
    )
    for label, method, req, want in (
        ("hyp_ready", hypotheses.MarkHypothesisReady, hypothesis_pb2.MarkHypothesisReadyRequest, "READY"),
        ("hyp_building", hypotheses.StartBuildingHypothesis, hypothesis_pb2.StartBuildingHypothesisRequest, "BUILDING"),
        ("hyp_deployed", hypotheses.MarkHypothesisDeployed, hypothesis_pb2.MarkHypothesisDeployedRequest, "DEPLOYED"),
        ("hyp_measuring", hypotheses.StartMeasuringHypothesis, hypothesis_pb2.StartMeasuringHypothesisRequest, "MEASURING"),
    ):
        hyp = method(req(id=hyp.id, etag=hyp.etag), metadata=alice.md(label), timeout=TIMEOUT)
        got = hypothesis_pb2.HypothesisStatus.Name(hyp.status)
        assert got == f"HYPOTHESIS_STATUS_{want}", f"{label}: hypothesis is {got}, expected {want}"
    assert hyp.HasField("start_time") and hyp.HasField("deploy_time") and hyp.HasField("measure_start_time"), (
        "the lifecycle times were not set on the way to MEASURING"
    )

    step("illegal move: FAILED_PRECONDITION ILLEGAL_TRANSITION with its metadata")
    _, _, details = expect_error(
        "MarkHypothesisReady on a MEASURING hypothesis",
        lambda: hypotheses.MarkHypothesisReady(
            hypothesis_pb2.MarkHypothesisReadyRequest(id=hyp.id), metadata=alice.md(), timeout=TIMEOUT
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = details["ErrorInfo"]
    assert info.reason == "ILLEGAL_TRANSITION", f"illegal move reason {info.reason!r}"
    for key in ("current_status", "requested_status", "allowed_statuses"):
        assert key in info.metadata, f"ILLEGAL_TRANSITION without metadata {key!r}: {dict(info.metadata)}"
    assert "MEASURING" in info.metadata["current_status"], f"current_status {info.metadata['current_status']!r}"

    step("ConcludeHypothesis MEASURING -> VALIDATED")
    hyp = hypotheses.ConcludeHypothesis(
        hypothesis_pb2.ConcludeHypothesisRequest(
            id=hyp.id,
            etag=hyp.etag,
            result=hypothesis_pb2.HYPOTHESIS_CONCLUSION_VALIDATED,
            notes="activation rose from 31% to 37%",
            experiment_results=hypothesis_pb2.ExperimentResults(
                metrics=[planning_pb2.Metric(key="week1_activation_rate", current=37.0)],
                summary="treatment beat control",
                sample_size=4000,
                confidence=0.97,
            ),
        ),
        metadata=alice.md("hyp_concluded"),
        timeout=TIMEOUT,
    )
    assert hyp.status == hypothesis_pb2.HYPOTHESIS_STATUS_VALIDATED, f"concluded hypothesis: {hyp.status}"
    assert hyp.concluded_by_id == alice.user.id, f"concluded_by_id {hyp.concluded_by_id!r}"
    assert hyp.experiment_results.HasField("confidence") and abs(hyp.experiment_results.confidence - 0.97) < 1e-9

    counts = outcomes.GetOutcome(
        planning_pb2.GetOutcomeRequest(id=outcome.id), metadata=alice.md(), timeout=TIMEOUT
    ).hypothesis_counts
    assert counts.total == 1 and counts.validated == 1, f"outcome's hypothesis_counts: {counts}"
    return outcome, hyp


class Watcher(threading.Thread):
    """WatchDecisions in a thread: every event into a queue."""

    def __init__(self, session):
        super().__init__(daemon=True)
        self.events = queue.Queue()
        self.call = decisions.WatchDecisions(
            decision_pb2.WatchDecisionsRequest(), metadata=session.md(), timeout=120
        )
        self.error = None

    def run(self):
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = err

    def wait_for(self, decision_id, event_type, seen, deadline_secs=15):
        name = decision_pb2.DecisionEventType.Name(event_type)
        end = time.monotonic() + deadline_secs
        for ev in seen:
            if ev.decision_id == decision_id and ev.event_type == event_type:
                return ev
        while time.monotonic() < end:
            try:
                ev = self.events.get(timeout=0.2)
            except queue.Empty:
                assert self.error is None, f"WatchDecisions ended: {self.error.code().name} {self.error.details()}"
                continue
            if ev.decision_id == decision_id:
                seen.append(ev)
                if ev.event_type == event_type:
                    return ev
        raise AssertionError(
            f"WatchDecisions: no {name} for {decision_id} within {deadline_secs}s; got "
            f"{[decision_pb2.DecisionEventType.Name(e.event_type) for e in seen]}"
        )


def run_decision(alice, outcome, hyp):
    step("WatchDecisions opened (in a thread) before the changes")
    watcher = Watcher(alice)
    # Events flow from the moment the response headers arrive.
    md = dict(watcher.call.initial_metadata())
    assert md.get("x-request-id"), f"WatchDecisions headers without x-request-id: {md}"
    watcher.start()

    step("CreateDecision with options, linked to the outcome and hypothesis")
    decision = decisions.CreateDecision(
        decision_pb2.CreateDecisionRequest(
            decision=decision_pb2.Decision(
                title=f"Polyglot decision {RUN}",
                description="Which onboarding checklist ships?",
                context="The hypothesis held; pick a variant to roll out.",
                priority=decision_pb2.DECISION_PRIORITY_HIGH,
                decision_type=decision_pb2.DECISION_TYPE_PRODUCT,
                outcome_id=outcome.id,
                hypothesis_id=hyp.id,
                sla_hours=48,
                tags=["polyglot"],
                options=[
                    decision_pb2.DecisionOption(id="short", title="Five steps", pros=["fast"], cons=["shallow"]),
                    decision_pb2.DecisionOption(id="long", title="Nine steps", pros=["thorough"]),
                ],
            )
        ),
        metadata=alice.md("create_decision"),
        timeout=TIMEOUT,
    )
    assert decision.status == decision_pb2.DECISION_STATUS_NEEDS_INPUT, f"new decision: {decision.status}"
    assert [o.id for o in decision.options] == ["short", "long"], f"options {[o.id for o in decision.options]}"
    assert decision.HasField("due_time"), "an open decision without due_time"
    assert decision.due_time.seconds - decision.create_time.seconds == 48 * 3600, "due_time is not create_time + 48 h"

    step("AddComment (the first comment moves it to UNDER_DISCUSSION)")
    comment = comments.AddComment(
        comment_pb2.AddCommentRequest(decision_id=decision.id, content="Five steps tested better.", option_id="short"),
        metadata=alice.md("add_comment"),
        timeout=TIMEOUT,
    )
    assert comment.author_id == alice.user.id and comment.option_id == "short", f"comment {comment}"
    listed = comments.ListComments(
        comment_pb2.ListCommentsRequest(decision_id=decision.id), metadata=alice.md(), timeout=TIMEOUT
    )
    assert [c.id for c in listed.comments] == [comment.id], f"ListComments: {[c.id for c in listed.comments]}"
    decision = decisions.GetDecision(
        decision_pb2.GetDecisionRequest(id=decision.id), metadata=alice.md(), timeout=TIMEOUT
    )
    assert decision.status == decision_pb2.DECISION_STATUS_UNDER_DISCUSSION, (
        f"after the first comment: {decision_pb2.DecisionStatus.Name(decision.status)}"
    )

    step("stale etag on a decision: ABORTED ETAG_MISMATCH")
    stale = decision.etag
    decision = decisions.UpdateDecision(
        decision_pb2.UpdateDecisionRequest(
            decision=decision_pb2.Decision(id=decision.id, etag=decision.etag, description="Five or nine steps?"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ),
        metadata=alice.md("update_decision"),
        timeout=TIMEOUT,
    )
    _, _, details = expect_error(
        "ResolveDecision with a stale etag",
        lambda: decisions.ResolveDecision(
            decision_pb2.ResolveDecisionRequest(id=decision.id, etag=stale, selected_option_id="short", rationale="x"),
            metadata=alice.md(),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.ABORTED,
    )
    assert details["ErrorInfo"].reason == "ETAG_MISMATCH", f"reason {details['ErrorInfo'].reason!r}"

    step("ResolveDecision -> DECIDED")
    decision = decisions.ResolveDecision(
        decision_pb2.ResolveDecisionRequest(
            id=decision.id, etag=decision.etag, selected_option_id="short", rationale="It tested better."
        ),
        metadata=alice.md("resolve_decision"),
        timeout=TIMEOUT,
    )
    assert decision.status == decision_pb2.DECISION_STATUS_DECIDED, f"resolved: {decision.status}"
    assert decision.selected_option.id == "short" and decision.decided_by_id == alice.user.id

    step("the watch saw created, commented, status changed, updated, resolved, in commit order")
    seen = []
    for t in (
        decision_pb2.DECISION_EVENT_TYPE_CREATED,
        decision_pb2.DECISION_EVENT_TYPE_COMMENTED,
        decision_pb2.DECISION_EVENT_TYPE_STATUS_CHANGED,
        decision_pb2.DECISION_EVENT_TYPE_UPDATED,
        decision_pb2.DECISION_EVENT_TYPE_RESOLVED,
    ):
        watcher.wait_for(decision.id, t, seen)
    kinds = [decision_pb2.DecisionEventType.Name(e.event_type) for e in seen]
    assert kinds[0] == "DECISION_EVENT_TYPE_CREATED", f"first event {kinds}"
    assert kinds[-1] == "DECISION_EVENT_TYPE_RESOLVED", f"last event {kinds}"
    assert seen[-1].status == decision_pb2.DECISION_STATUS_DECIDED, f"status in the RESOLVED event: {seen[-1].status}"
    times = [(e.event_time.seconds, e.event_time.nanos) for e in seen]
    assert times == sorted(times), f"events out of commit order: {kinds} at {times}"
    watcher.call.cancel()
    watcher.join(5)
    return decision


def run_errors(alice, dan):
    step("bad request: INVALID_ARGUMENT with BadRequest field violations")
    err, _, details = expect_error(
        "CreateOutcome without title and priority, with a bad date",
        lambda: outcomes.CreateOutcome(
            planning_pb2.CreateOutcomeRequest(outcome=planning_pb2.Outcome(target_date="2026-13-01")),
            metadata=alice.md(),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details["ErrorInfo"].reason == "FIELD_VIOLATIONS", f"reason {details['ErrorInfo'].reason!r}"
    assert "BadRequest" in details, f"INVALID_ARGUMENT without BadRequest: {list(details)}"
    fields = {v.field: v.description for v in details["BadRequest"].field_violations}
    for f in ("outcome.title", "outcome.priority", "outcome.target_date"):
        assert f in fields, f"no field violation for {f}: {fields}"
    md = dict(err.trailing_metadata() or ()) | dict(err.initial_metadata() or ())
    assert md.get("x-request-id", "").startswith(f"polyglot-{RUN}-"), (
        f"the error did not return the x-request-id sent: {md.get('x-request-id')!r}"
    )

    step("permission failure: PERMISSION_DENIED, ErrorInfo PERMISSION_MISSING naming the permission")
    _, _, details = expect_error(
        "CreateDecision as a VIEWER",
        lambda: decisions.CreateDecision(
            decision_pb2.CreateDecisionRequest(
                decision=decision_pb2.Decision(title="nope", priority=decision_pb2.DECISION_PRIORITY_LOW)
            ),
            metadata=dan.md(),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    info = details["ErrorInfo"]
    assert info.reason == "PERMISSION_MISSING", f"reason {info.reason!r}"
    assert info.metadata.get("permission") == "decision.write", f"metadata {dict(info.metadata)}"

    step("not found: NOT_FOUND, ErrorInfo RESOURCE_NOT_FOUND and ResourceInfo")
    _, _, details = expect_error(
        "GetDecision of an unknown id",
        lambda: decisions.GetDecision(
            decision_pb2.GetDecisionRequest(id=str(uuid.uuid4())), metadata=alice.md(), timeout=TIMEOUT
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert details["ErrorInfo"].reason == "RESOURCE_NOT_FOUND", f"reason {details['ErrorInfo'].reason!r}"
    assert "ResourceInfo" in details and details["ResourceInfo"].resource_type == "decision", (
        f"ResourceInfo {details.get('ResourceInfo')}"
    )

    step("wrong port: UNIMPLEMENTED, ErrorInfo METHOD_NOT_FOUND naming the method")
    wrong_port = planning_pb2_grpc.OutcomeServiceStub(identity_ch)
    _, _, details = expect_error(
        "planning's ListOutcomes sent to identity's port",
        lambda: wrong_port.ListOutcomes(planning_pb2.ListOutcomesRequest(), metadata=alice.md(), timeout=TIMEOUT),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    info = details["ErrorInfo"]
    assert info.reason == "METHOD_NOT_FOUND", f"reason {info.reason!r}"
    assert info.metadata.get("method") == "/codeops.planning.v1.OutcomeService/ListOutcomes", dict(info.metadata)

    step("no token: UNAUTHENTICATED TOKEN_MISSING")
    _, _, details = expect_error(
        "ListOutcomes without a token",
        lambda: outcomes.ListOutcomes(planning_pb2.ListOutcomesRequest(), timeout=TIMEOUT),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert details["ErrorInfo"].reason == "TOKEN_MISSING", f"reason {details['ErrorInfo'].reason!r}"


def check_audit(alice, outcome, hyp, decision):
    step("AuditService/ListAuditLogs shows every step, with the x-request-id sent")
    A = audit_pb2.AuditAction
    expected = {
        outcome.id: [("create_outcome", A.Value("AUDIT_ACTION_CREATE")), ("start_outcome", A.Value("AUDIT_ACTION_STATUS_CHANGE"))],
        hyp.id: [
            ("create_hypothesis", A.Value("AUDIT_ACTION_CREATE")),
            ("hyp_ready", A.Value("AUDIT_ACTION_HYPOTHESIS_TRANSITIONED")),
            ("hyp_building", A.Value("AUDIT_ACTION_HYPOTHESIS_TRANSITIONED")),
            ("hyp_deployed", A.Value("AUDIT_ACTION_HYPOTHESIS_TRANSITIONED")),
            ("hyp_measuring", A.Value("AUDIT_ACTION_HYPOTHESIS_TRANSITIONED")),
            ("hyp_concluded", A.Value("AUDIT_ACTION_HYPOTHESIS_CONCLUDED")),
        ],
        decision.id: [
            ("create_decision", A.Value("AUDIT_ACTION_CREATE")),
            # The first comment: the comment itself and the move it makes.
            ("add_comment", A.Value("AUDIT_ACTION_DECISION_COMMENTED")),
            ("add_comment", A.Value("AUDIT_ACTION_STATUS_CHANGE")),
            ("update_decision", A.Value("AUDIT_ACTION_UPDATE")),
            ("resolve_decision", A.Value("AUDIT_ACTION_DECISION_RESOLVED")),
        ],
    }
    for entity_id, want in expected.items():
        entries = audit_entries(alice, entity_id)
        got = sorted((e.request_id, e.action) for e in entries)
        for label, action in want:
            pair = (alice.request_ids[label], action)
            assert pair in got, (
                f"audit trail of {entity_id}: no {A.Name(action)} with request id {pair[0]} ({label}); "
                f"got {[(rid, A.Name(a)) for rid, a in got]}"
            )
        for e in entries:
            assert e.actor_id == alice.user.id, f"audit entry {e.id} by {e.actor_id}, expected alice"
        assert len(entries) == len(want), (
            f"audit trail of {entity_id}: {len(entries)} entries, expected {len(want)}: "
            f"{[A.Name(e.action) for e in entries]}"
        )
    logins = audit.ListAuditLogs(
        audit_pb2.ListAuditLogsRequest(
            page_size=10, actor_id=alice.user.id, action=A.Value("AUDIT_ACTION_LOGIN")
        ),
        metadata=alice.md(),
        timeout=TIMEOUT,
    ).audit_logs
    assert logins, "no LOGIN entry for alice"
    assert "python" in logins[0].user_agent.lower() or "grpc" in logins[0].user_agent.lower(), (
        f"LOGIN entry's user agent {logins[0].user_agent!r}"
    )


def run_tokens():
    step("Refresh rotates the refresh token; the new access token works")
    s = login("carol@acme.test")
    user = auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=s.md(), timeout=TIMEOUT)
    assert user.email == "carol@acme.test", f"GetCurrentUser: {user.email}"
    fresh = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=s.tokens.refresh_token), timeout=TIMEOUT).tokens
    assert fresh.access_token and fresh.refresh_token != s.tokens.refresh_token, "Refresh did not rotate"
    user = auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=s.md(token=fresh.access_token), timeout=TIMEOUT
    )
    assert user.email == "carol@acme.test", "the refreshed access token does not work"

    step("Logout; the old access token and refresh token are refused")
    out = auth.Logout(
        auth_pb2.LogoutRequest(refresh_token=fresh.refresh_token),
        metadata=s.md(token=fresh.access_token),
        timeout=TIMEOUT,
    )
    # One session (one refresh-token family), however often it was rotated.
    assert out.revoked_sessions == 1, f"Logout revoked {out.revoked_sessions} sessions"
    for what, token in (("the first", s.tokens.refresh_token), ("the rotated", fresh.refresh_token)):
        _, _, details = expect_error(
            f"Refresh with {what} refresh token after logout",
            lambda: auth.Refresh(auth_pb2.RefreshRequest(refresh_token=token), timeout=TIMEOUT),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert details["ErrorInfo"].reason == "REFRESH_TOKEN_INVALID", (
            f"Refresh with {what} refresh token: reason {details['ErrorInfo'].reason!r}"
        )
    # Identity's writes refuse a revoked session at once.
    _, _, details = expect_error(
        "ChangePassword with a logged-out access token",
        lambda: auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="password123", new_password="password456789"),
            metadata=s.md(token=fresh.access_token),
            timeout=TIMEOUT,
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert details["ErrorInfo"].reason == "SESSION_REVOKED", f"reason {details['ErrorInfo'].reason!r}"
    # Everywhere else within one poll of the revocation feed.
    bound = REVOCATION_POLL_SECS * 2 + 10
    for name, call in (
        ("planning ListOutcomes", lambda t: outcomes.ListOutcomes(
            planning_pb2.ListOutcomesRequest(page_size=1), metadata=s.md(token=t), timeout=TIMEOUT)),
        ("decision ListDecisions", lambda t: decisions.ListDecisions(
            decision_pb2.ListDecisionsRequest(page_size=1), metadata=s.md(token=t), timeout=TIMEOUT)),
        ("identity GetCurrentUser", lambda t: auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=s.md(token=t), timeout=TIMEOUT)),
    ):
        end = time.monotonic() + bound
        while True:
            try:
                call(fresh.access_token)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, f"{name} after logout: {err.code().name}"
                status = rpc_status.from_call(err)
                reasons = [
                    error_details_pb2.ErrorInfo.FromString(d.value).reason
                    for d in status.details
                    if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
                ]
                assert reasons == ["SESSION_REVOKED"], f"{name} after logout: reasons {reasons}"
                break
            assert time.monotonic() < end, f"{name} still accepts a logged-out access token after {bound}s"
            time.sleep(0.25)

    step("a refresh token presented twice: REFRESH_TOKEN_REUSED, and the whole session ends")
    b = login("bob@acme.test")
    rotated = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=b.tokens.refresh_token), timeout=TIMEOUT).tokens
    _, _, details = expect_error(
        "Refresh with a used refresh token",
        lambda: auth.Refresh(auth_pb2.RefreshRequest(refresh_token=b.tokens.refresh_token), timeout=TIMEOUT),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert details["ErrorInfo"].reason == "REFRESH_TOKEN_REUSED", f"reason {details['ErrorInfo'].reason!r}"
    _, _, details = expect_error(
        "Refresh with the token rotated before the reuse",
        lambda: auth.Refresh(auth_pb2.RefreshRequest(refresh_token=rotated.refresh_token), timeout=TIMEOUT),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert details["ErrorInfo"].reason == "REFRESH_TOKEN_INVALID", f"reason {details['ErrorInfo'].reason!r}"
    return s


def main():
    started = time.monotonic()
    print(f"stubs generated by grpcio-tools into {STUBS}")
    check_vendored_error_details()
    check_health()
    step("Login (alice, OWNER; dan, VIEWER)")
    alice = login("alice@acme.test")
    dan = login("dan@acme.test")
    outcome, hyp = run_planning(alice)
    decision = run_decision(alice, outcome, hyp)
    run_errors(alice, dan)
    check_audit(alice, outcome, hyp, decision)
    carol = run_tokens()
    step("LOGOUT is in the audit trail")
    entries = audit.ListAuditLogs(
        audit_pb2.ListAuditLogsRequest(
            page_size=10, actor_id=carol.user.id, action=audit_pb2.AuditAction.Value("AUDIT_ACTION_LOGOUT")
        ),
        metadata=alice.md(),
        timeout=TIMEOUT,
    ).audit_logs
    assert entries, "no LOGOUT entry for carol"
    step("Logout of every session of alice and dan")
    for s in (alice, dan):
        auth.Logout(auth_pb2.LogoutRequest(), metadata=s.md(), timeout=TIMEOUT)
    print(f"python client: all {step_no} steps passed in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"\nPYTHON CLIENT FAILED at step {step_no}: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        status = rpc_status.from_call(e)
        print(
            f"\nPYTHON CLIENT FAILED at step {step_no}: unexpected {e.code().name}: {e.details()}\n{status}",
            file=sys.stderr,
        )
        sys.exit(1)
