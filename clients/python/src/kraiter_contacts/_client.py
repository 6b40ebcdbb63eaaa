"""The client: ``Client(address, api_key).contacts`` reads like the SDK's
``kraiter.contacts`` namespace."""

from __future__ import annotations

import collections
import time
from typing import Any, Iterable, Mapping, NamedTuple

import grpc
from google.protobuf import json_format, struct_pb2

from kraiter.contacts.v1 import activity_pb2, contact_pb2
from kraiter.contacts.v1 import activity_service_pb2_grpc as act_grpc
from kraiter.contacts.v1 import contacts_service_pb2 as cs
from kraiter.contacts.v1 import contacts_service_pb2_grpc as cs_grpc

from ._errors import KraiterError, RetryPolicy, retry_after
from ._pages import Pages

Contact = contact_pb2.Contact


class Client:
    """A connection to the service that sends ``authorization: Bearer <api_key>`` on
    every call. ``contacts`` is the SDK's contacts namespace, ``activity`` the
    generated ingestion stub (``ActivityService``), already authenticated.

    ``address`` is ``host:port``; give ``credentials`` (``grpc.ssl_channel_credentials()``)
    for TLS, or build the channel yourself with ``Client.from_channel``.
    """

    def __init__(
        self,
        address: str,
        api_key: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ):
        options = list(options)
        if credentials is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            channel = grpc.secure_channel(address, credentials, options=options)
        self._init(channel, api_key, retry, timeout)

    @classmethod
    def from_channel(
        cls,
        channel: grpc.Channel,
        api_key: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Client:
        client = cls.__new__(cls)
        client._init(channel, api_key, retry, timeout)
        return client

    def _init(self, channel, api_key, retry, timeout) -> None:
        self._channel = channel
        authed = grpc.intercept_channel(channel, _ApiKey(api_key))
        self.contacts = Contacts(cs_grpc.ContactsServiceStub(authed), retry or RetryPolicy(), timeout)
        self.activity = act_grpc.ActivityServiceStub(authed)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Upserted(NamedTuple):
    contact: Contact
    created: bool


class Contacts:
    """``create``, ``get``, ``get_by_email``, ``list``, ``update``, ``delete``, ``upsert``
    and the per-contact reads. Reads and lists are retried on UNAVAILABLE (see
    ``RetryPolicy``); writes are not. Every failure is a ``KraiterError``."""

    def __init__(self, stub: cs_grpc.ContactsServiceStub, retry: RetryPolicy, timeout):
        self._stub = stub
        self._retry = retry
        self._timeout = timeout

    def create(
        self,
        email: str,
        properties: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
    ) -> Contact:
        """``contacts.create``: CONFLICT when the tenant has the email already."""
        request = cs.CreateContactRequest(
            email=email, properties=to_struct(properties), request_id=request_id
        )
        return self._write(self._stub.CreateContact, request)

    def get(self, id: str) -> Contact:
        """``contacts.get``: NOT_FOUND when the tenant has no such contact."""
        return self._read(self._stub.GetContact, cs.GetContactRequest(id=id))

    def get_by_email(self, email: str) -> Contact | None:
        """``contacts.getByEmail`` (ignoring case): ``None`` when there is none."""
        response = self._read(
            self._stub.GetContactByEmail, cs.GetContactByEmailRequest(email=email)
        )
        return response.contact if response.HasField("contact") else None

    def list(
        self,
        *,
        search: str = "",
        limit: int = 0,
        cursor: str = "",
        suppressed: bool | None = None,
        max_pages: int = 0,
    ) -> Pages[Contact]:
        """``contacts.list``: every matching contact in id order, page after page
        (``limit`` items a page), from ``cursor``, stopping after ``max_pages`` (0: to
        the end)."""
        request = cs.ListContactsRequest(
            search=search, limit=limit, cursor=cursor, max_pages=max_pages
        )
        if suppressed is not None:
            request.suppressed = suppressed
        return self._pages(self._stub.ListContacts, request, "contacts")

    def update(
        self,
        id: str,
        *,
        email: str | None = None,
        properties: Mapping[str, Any] | None = None,
        etag: str = "",
        request_id: str = "",
    ) -> Contact:
        """``contacts.update``: only what is given changes; a property set to ``None``
        is removed. With ``etag``, only that version is changed (else ETAG_MISMATCH)."""
        request = cs.UpdateContactRequest(
            id=id, properties=to_struct(properties), etag=etag, request_id=request_id
        )
        if email is not None:
            request.email = email
        return self._write(self._stub.UpdateContact, request)

    def delete(self, id: str, *, etag: str = "", request_id: str = "") -> None:
        """``contacts.delete``: erases the contact and all its activity."""
        request = cs.DeleteContactRequest(id=id, etag=etag, request_id=request_id)
        self._write(self._stub.DeleteContact, request)

    def upsert(
        self,
        email: str,
        properties: Mapping[str, Any] | None = None,
        *,
        request_id: str = "",
    ) -> Upserted:
        """Creates the contact with ``email``, or merges ``properties`` into the one
        that has it; ``created`` says which."""
        request = cs.UpsertContactRequest(
            email=email, properties=to_struct(properties), request_id=request_id
        )
        response = self._write(self._stub.UpsertContact, request)
        return Upserted(response.contact, response.created)

    def batch_get(
        self, *, ids: Iterable[str] = (), emails: Iterable[str] = ()
    ) -> cs.BatchGetContactsResponse:
        """Up to 1,000 contacts by id and by email; ``missing`` lists those not found."""
        request = cs.BatchGetContactsRequest(ids=list(ids), emails=list(emails))
        return self._read(self._stub.BatchGetContacts, request)

    def get_sends(self, id: str, *, limit: int = 0, cursor: str = "") -> Pages[activity_pb2.Send]:
        """``contacts.getSends``: the contact's sends, newest first."""
        request = cs.ListContactSendsRequest(id=id, limit=limit, cursor=cursor)
        return self._pages(self._stub.ListContactSends, request, "sends")

    def get_scheduled(
        self, id: str, *, limit: int = 0, cursor: str = ""
    ) -> Pages[activity_pb2.ScheduledSend]:
        """``contacts.getScheduled``: pending scheduled sends, earliest first."""
        request = cs.ListContactScheduledSendsRequest(id=id, limit=limit, cursor=cursor)
        return self._pages(self._stub.ListContactScheduledSends, request, "scheduled_sends")

    def get_sequences(
        self, id: str, *, include_finished: bool = False
    ) -> list[activity_pb2.SequenceEnrolment]:
        """``contacts.getSequences``: active and paused enrolments (all with
        ``include_finished``)."""
        request = cs.ListContactSequencesRequest(id=id, include_finished=include_finished)
        return list(self._read(self._stub.ListContactSequences, request).enrolments)

    def get_segments(self, id: str) -> list[activity_pb2.SegmentMembership]:
        """``contacts.getSegments``: the contact's current segment memberships."""
        request = cs.ListContactSegmentsRequest(id=id)
        return list(self._read(self._stub.ListContactSegments, request).memberships)

    def get_timeline(
        self,
        id: str,
        *,
        limit: int = 0,
        cursor: str = "",
        oldest_first: bool = False,
        types: Iterable[str] = (),
    ) -> Pages[activity_pb2.TimelineEntry]:
        """``contacts.getTimeline``: newest first, or oldest first; only ``types`` if given."""
        order = cs.TIMELINE_ORDER_OLDEST_FIRST if oldest_first else cs.TIMELINE_ORDER_NEWEST_FIRST
        request = cs.ListContactTimelineRequest(
            id=id, limit=limit, cursor=cursor, order=order, types=list(types)
        )
        return self._pages(self._stub.ListContactTimeline, request, "entries")

    def _write(self, method, request):
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as rpc_err:
            raise KraiterError.from_rpc_error(rpc_err) from rpc_err

    def _read(self, method, request):
        failures = 0
        while True:
            try:
                return method(request, timeout=self._timeout)
            except grpc.RpcError as rpc_err:
                err = KraiterError.from_rpc_error(rpc_err)
                failures += 1
                wait = retry_after(err, failures, self._retry)
                if wait is None:
                    raise err from rpc_err
                time.sleep(wait)

    def _pages(self, method, request, items: str) -> Pages:
        return Pages(lambda req: method(req, timeout=self._timeout), request, items, self._retry)


def to_struct(properties: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    """A dict as contact properties (``None`` values remove keys in an update)."""
    if properties is None:
        return None
    message = struct_pb2.Struct()
    message.update(properties)
    return message


def properties(contact: Contact) -> dict[str, Any]:
    """A contact's properties as a dict; integral numbers come back as ``int``."""
    return _ints(json_format.MessageToDict(contact.properties))


def _ints(value):
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_ints(item) for item in value]
    return value


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _ApiKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <key>`` to every call."""

    def __init__(self, api_key: str):
        self._header = ("authorization", f"Bearer {api_key}")

    def _with_key(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)
