"""The SDK scenario through a Python client generated from proto/ by grpcio-tools.

Usage: scenario.py ADDRESS API_KEY

Run by `cargo test` (tests/api/ops/python.rs), which generates the client and starts the
server. Any failed check raises, so the process exits non-zero with a traceback.
Errors are read the way any gRPC client reads them: the `grpc-status-details-bin`
trailer decoded by grpcio-status into google.rpc.Status, whose details hold the
google.rpc.ErrorInfo (and BadRequest) from googleapis-common-protos.
"""

import sys

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kraiter.contacts.v1 import activity_pb2
from kraiter.contacts.v1 import activity_service_pb2 as act
from kraiter.contacts.v1 import activity_service_pb2_grpc as act_grpc
from kraiter.contacts.v1 import contacts_service_pb2 as cs
from kraiter.contacts.v1 import contacts_service_pb2_grpc as cs_grpc

DOMAIN = "contacts.kraiter.dev"


def props(value):
    message = struct_pb2.Struct()
    message.update(value)
    return message


def as_dict(message):
    return json_format.MessageToDict(message)


def details(err):
    """ErrorInfo and BadRequest of a failed call."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status details in {err!r}"
    info, bad_request = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
    assert info is not None, f"no ErrorInfo in {status}"
    assert info.domain == DOMAIN, info
    return info, bad_request


def expect_error(what, code, reason, call, request, **kwargs):
    try:
        call(request, **kwargs)
    except grpc.RpcError as err:
        assert err.code() == code, f"{what}: {err.code()} {err.details()}"
        info, bad_request = details(err)
        assert info.reason == reason, f"{what}: reason {info.reason}"
        return bad_request
    raise AssertionError(f"{what}: expected {code}, the call succeeded")


def main(address, key):
    if sys.flags.optimize:
        sys.exit("the scenario's checks are asserts: run it without -O or PYTHONOPTIMIZE")
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    auth = (("authorization", f"Bearer {key}"),)
    contacts = cs_grpc.ContactsServiceStub(channel)
    activity = act_grpc.ActivityServiceStub(channel)

    # create, get, getByEmail
    alice = contacts.CreateContact(
        cs.CreateContactRequest(
            email="Alice@Example.com",
            properties=props({"firstName": "Alice", "plan": "pro", "trial": True}),
        ),
        metadata=auth,
    )
    assert alice.id.startswith("con_"), alice
    assert alice.email == "Alice@Example.com"
    got = contacts.GetContact(cs.GetContactRequest(id=alice.id), metadata=auth)
    assert got == alice, (got, alice)
    found = contacts.GetContactByEmail(
        cs.GetContactByEmailRequest(email="alice@example.COM"), metadata=auth
    )
    assert found.HasField("contact") and found.contact.id == alice.id, found
    missing = contacts.GetContactByEmail(
        cs.GetContactByEmailRequest(email="nobody@example.com"), metadata=auth
    )
    assert not missing.HasField("contact"), "getByEmail of an unknown address is empty"

    # errors carry the SDK code in ErrorInfo.reason
    expect_error(
        "duplicate email",
        grpc.StatusCode.ALREADY_EXISTS,
        "CONFLICT",
        contacts.CreateContact,
        cs.CreateContactRequest(email="ALICE@example.com"),
        metadata=auth,
    )
    bad_request = expect_error(
        "invalid email",
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_ERROR",
        contacts.CreateContact,
        cs.CreateContactRequest(email="not an email"),
        metadata=auth,
    )
    assert bad_request is not None and bad_request.field_violations[0].field == "email"
    expect_error(
        "no key",
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHORISED",
        contacts.GetContact,
        cs.GetContactRequest(id=alice.id),
    )

    # streamed list with search, resumed from a cursor
    wanted = []
    for n in range(5):
        contact = contacts.CreateContact(
            cs.CreateContactRequest(
                email=f"py{n}@example.com", properties=props({"team": f"Needle-{n}"})
            ),
            metadata=auth,
        )
        wanted.append(contact.id)
    contacts.CreateContact(
        cs.CreateContactRequest(email="hay@example.com", properties=props({"team": "hay"})),
        metadata=auth,
    )
    pages = list(
        contacts.ListContacts(
            cs.ListContactsRequest(search="needle", limit=2, max_pages=1), metadata=auth
        )
    )
    assert len(pages) == 1 and len(pages[0].contacts) == 2, pages
    assert pages[0].next_cursor, "a page before the end carries a cursor"
    seen = [c.id for c in pages[0].contacts]
    rest = contacts.ListContacts(
        cs.ListContactsRequest(search="needle", limit=2, cursor=pages[0].next_cursor),
        metadata=auth,
    )
    last_cursor = None
    for page in rest:
        seen.extend(c.id for c in page.contacts)
        last_cursor = page.next_cursor
    assert last_cursor == "", "the last page has an empty cursor"
    assert seen == sorted(wanted), (seen, wanted)

    # update: a property set to null is removed, absent keys stay
    updated = contacts.UpdateContact(
        cs.UpdateContactRequest(id=alice.id, properties=props({"plan": "enterprise", "trial": None})),
        metadata=auth,
    )
    assert as_dict(updated.properties) == {"firstName": "Alice", "plan": "enterprise"}, updated

    # ingestion, then the activity reads
    send = activity.RecordSend(
        act.RecordSendRequest(
            request_id="py-send-1",
            contact_id=alice.id,
            template_id="welcome",
            subject="Hi",
            source=activity_pb2.SEND_SOURCE_TRANSACTIONAL,
        ),
        metadata=auth,
    )
    activity.UpdateSendStatus(
        act.UpdateSendStatusRequest(send_id=send.id, status=activity_pb2.SEND_STATUS_DELIVERED),
        metadata=auth,
    )
    when = timestamp_pb2.Timestamp()
    when.FromJsonString("2030-01-02T09:00:00Z")
    scheduled = activity.ScheduleSend(
        act.ScheduleSendRequest(
            contact_id=alice.id,
            template_id="day-2",
            scheduled_for=when,
            source=activity_pb2.SEND_SOURCE_SEQUENCE,
            source_id="onboarding",
        ),
        metadata=auth,
    )
    activity.EnrolContact(
        act.EnrolContactRequest(contact_id=alice.id, sequence_id="onboarding", sequence_name="Onboarding"),
        metadata=auth,
    )
    activity.SetSegmentMembership(
        act.SetSegmentMembershipRequest(contact_id=alice.id, segment_id="vip", member=True),
        metadata=auth,
    )
    sends = [s for page in contacts.ListContactSends(cs.ListContactSendsRequest(id=alice.id), metadata=auth) for s in page.sends]
    assert [(s.id, s.status) for s in sends] == [(send.id, activity_pb2.SEND_STATUS_DELIVERED)], sends
    pending = [
        s
        for page in contacts.ListContactScheduledSends(
            cs.ListContactScheduledSendsRequest(id=alice.id), metadata=auth
        )
        for s in page.scheduled_sends
    ]
    assert [s.id for s in pending] == [scheduled.id], pending
    sequences = contacts.ListContactSequences(cs.ListContactSequencesRequest(id=alice.id), metadata=auth)
    assert [e.sequence_id for e in sequences.enrolments] == ["onboarding"], sequences
    segments = contacts.ListContactSegments(cs.ListContactSegmentsRequest(id=alice.id), metadata=auth)
    assert [m.segment_id for m in segments.memberships] == ["vip"], segments
    timeline = [
        e.type
        for page in contacts.ListContactTimeline(
            cs.ListContactTimelineRequest(id=alice.id, order=cs.TIMELINE_ORDER_OLDEST_FIRST),
            metadata=auth,
        )
        for e in page.entries
    ]
    for expected in ["contact.created", "contact.updated", "email.queued", "email.delivered",
                     "send.scheduled", "sequence.enrolled", "segment.entered"]:
        assert expected in timeline, (expected, timeline)
    assert timeline[0] == "contact.created", timeline

    # delete, then everything about the contact is gone
    contacts.DeleteContact(cs.DeleteContactRequest(id=alice.id), metadata=auth)
    expect_error(
        "deleted contact",
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        contacts.GetContact,
        cs.GetContactRequest(id=alice.id),
        metadata=auth,
    )
    expect_error(
        "sends of a deleted contact",
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        lambda request, **kw: list(contacts.ListContactSends(request, **kw)),
        cs.ListContactSendsRequest(id=alice.id),
        metadata=auth,
    )
    print("python scenario passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
