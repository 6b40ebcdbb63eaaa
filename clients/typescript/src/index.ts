// Client for the kraiter-contacts gRPC service, reading like the SDK:
//
//   const client = new Client("localhost:50051", apiKey);
//   const alice = await client.contacts.create({ email: "alice@example.com", properties: { plan: "pro" } });
//   for await (const contact of client.contacts.list({ search: "alice" })) console.log(contact.email);
//
// The generated message types and grpc-js clients (ts-proto, from the service's protos
// when the package is built) are exported as `pb`, `activity` and `errorDetails`.

export { Client, type ClientOptions, Contacts, type Properties } from "./client";
export {
  DEFAULT_RETRY,
  DOMAIN,
  type FieldViolation,
  KraiterError,
  NO_RETRY,
  type RetryPolicy,
} from "./errors";
export { Pages } from "./pages";
export type { Contact } from "./gen/kraiter/contacts/v1/contact";
export * as pb from "./gen/kraiter/contacts/v1/contacts_service";
export * as activity from "./gen/kraiter/contacts/v1/activity_service";
export * as errorDetails from "./gen/google/rpc/error_details";
export { Status } from "./gen/google/rpc/status";
