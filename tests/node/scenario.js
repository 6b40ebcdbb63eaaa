// The SDK scenario through a Node.js client: @grpc/grpc-js with @grpc/proto-loader,
// loading proto/ at run time, as a Node user of the service would.
//
// Usage: node scenario.js ADDRESS API_KEY PROTO_DIR
//
// Run by `cargo test` (tests/api/ops/node.rs), which installs the packages and starts
// the server. Errors are read the way any gRPC client reads them: the
// `grpc-status-details-bin` trailer is a google.rpc.Status, decoded with the protos the
// project ships in proto/google/rpc/ (no file from outside the repository), whose
// details hold the google.rpc.ErrorInfo and BadRequest. Any failed check throws, so
// the process exits non-zero.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [address, apiKey, protoDir] = process.argv.slice(2);
const DOMAIN = "contacts.kraiter.dev";

const definition = protoLoader.loadSync(
  "kraiter/contacts/v1/contacts_service.proto",
  { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).kraiter.contacts.v1;

// google.rpc.Status and its details, from the shipped protos.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) => path.join(protoDir, target);
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");
const ErrorInfo = rpc.lookupType("google.rpc.ErrorInfo");
const BadRequest = rpc.lookupType("google.rpc.BadRequest");

const credentials = grpc.credentials.createInsecure();
const client = new v1.ContactsService(address, credentials);

function metadata() {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${apiKey}`);
  return md;
}

function unary(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata(), (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// ErrorInfo and BadRequest of a failed call.
function details(err) {
  const raw = err.metadata.get("grpc-status-details-bin");
  assert.equal(raw.length, 1, `one google.rpc.Status in ${err.message}`);
  const status = Status.decode(raw[0]);
  assert.equal(status.code, err.code, "the details' code is the call's");
  let info = null;
  let badRequest = null;
  for (const any of status.details) {
    if (any.type_url === "type.googleapis.com/google.rpc.ErrorInfo") info = ErrorInfo.decode(any.value);
    if (any.type_url === "type.googleapis.com/google.rpc.BadRequest") badRequest = BadRequest.decode(any.value);
  }
  assert.ok(info, `an ErrorInfo in ${err.message}`);
  assert.equal(info.domain, DOMAIN);
  return { info, badRequest };
}

async function expectError(what, code, reason, method, request) {
  try {
    await unary(method, request);
  } catch (err) {
    assert.equal(err.code, code, `${what}: ${err.message}`);
    const found = details(err);
    assert.equal(found.info.reason, reason, what);
    return found;
  }
  assert.fail(`${what}: the call succeeded`);
}

function props(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) {
    fields[key] = typeof value === "number" ? { numberValue: value } : { stringValue: String(value) };
  }
  return { fields };
}

// Every page of a ListContacts stream, in order.
function listPages(request) {
  return new Promise((resolve, reject) => {
    const pages = [];
    const call = client.ListContacts(request, metadata());
    call.on("data", (page) => pages.push(page));
    call.on("error", reject);
    call.on("end", () => resolve(pages));
  });
}

async function main() {
  const tag = Date.now().toString(36);
  const email = `node-${tag}@example.com`;
  const created = await unary("CreateContact", { email, properties: props({ plan: "pro" }) });
  assert.match(created.id, /^con_/);
  assert.equal(created.properties.fields.plan.stringValue, "pro");
  assert.ok(created.etag, "a contact carries its etag");

  await expectError("duplicate", grpc.status.ALREADY_EXISTS, "CONFLICT", "CreateContact", {
    email: email.toUpperCase(),
  });
  const invalid = await expectError("bad email", grpc.status.INVALID_ARGUMENT, "VALIDATION_ERROR", "CreateContact", {
    email: "not-an-email",
  });
  assert.ok(invalid.badRequest, "validation errors carry a BadRequest");
  assert.equal(invalid.badRequest.field_violations[0].field, "email");
  await expectError("unknown id", grpc.status.NOT_FOUND, "NOT_FOUND", "GetContact", {
    id: "con_01J00000000000000000000000",
  });

  // A streamed list, page by page, then resumed from a cursor.
  for (let i = 0; i < 24; i++) {
    await unary("CreateContact", { email: `page-${i}-${tag}@example.com` });
  }
  const pages = await listPages({ search: tag, limit: 10 });
  assert.deepEqual(pages.map((p) => p.contacts.length), [10, 10, 5]);
  const ids = pages.flatMap((p) => p.contacts.map((c) => c.id));
  assert.equal(new Set(ids).size, 25, "every contact once");
  assert.equal(pages[2].next_cursor, "", "the last page has no cursor");
  const rest = await listPages({ search: tag, limit: 10, cursor: pages[0].next_cursor });
  assert.deepEqual(rest.flatMap((p) => p.contacts.map((c) => c.id)), ids.slice(10));

  // Cancelling a stream after its first page: the client sees CANCELLED, the server
  // goes on serving.
  const cancelled = await new Promise((resolve, reject) => {
    const call = client.ListContacts({ search: tag, limit: 1 }, metadata());
    let pagesSeen = 0;
    call.on("data", () => {
      pagesSeen += 1;
      if (pagesSeen === 1) call.cancel();
    });
    call.on("error", (err) => resolve({ err, pagesSeen }));
    call.on("end", () => reject(new Error("the cancelled stream ran to its end")));
  });
  assert.equal(cancelled.err.code, grpc.status.CANCELLED);
  assert.ok(cancelled.pagesSeen >= 1 && cancelled.pagesSeen < 25, `${cancelled.pagesSeen} pages before the cancel`);
  const again = await unary("GetContact", { id: created.id });
  assert.equal(again.email, email);

  console.log("node scenario passed");
  client.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
