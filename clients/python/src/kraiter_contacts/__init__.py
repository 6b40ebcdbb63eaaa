"""Client for the kraiter-contacts gRPC service, reading like the SDK::

    from kraiter_contacts import Client, KraiterError

    with Client("localhost:50051", api_key) as client:
        alice = client.contacts.create("alice@example.com", {"plan": "pro"})
        assert client.contacts.get_by_email("ALICE@example.com").id == alice.id
        for contact in client.contacts.list(search="alice"):
            print(contact.email)
        try:
            client.contacts.create("alice@example.com")
        except KraiterError as err:
            assert err.code == "CONFLICT"

The generated stubs are the modules of ``kraiter.contacts.v1`` (``contacts_service_pb2``,
``contacts_service_pb2_grpc``, ...), generated from the service's protos when this
package was built.
"""

from ._client import Client, Contact, Contacts, Upserted, properties, to_struct
from ._errors import DOMAIN, FieldViolation, KraiterError, RetryPolicy
from ._pages import Pages

__all__ = [
    "DOMAIN",
    "Client",
    "Contact",
    "Contacts",
    "FieldViolation",
    "KraiterError",
    "Pages",
    "RetryPolicy",
    "Upserted",
    "properties",
    "to_struct",
]
