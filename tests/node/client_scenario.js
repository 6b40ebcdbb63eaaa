// The SDK scenario through the `kraiter-contacts` TypeScript package (clients/typescript/).
//
// Usage: node client_scenario.js ADDRESS API_KEY
//
// Run by `cargo test` (tests/api/ops/typescript_client.rs), which builds the package
// (ts-proto generates its stubs from proto/, tsc compiles it), installs its packed
// tarball as a user would, and starts the server. Only the package's surface is used.
// Any failed check throws, so the process exits non-zero.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const net = require("node:net");
const { Metadata, status } = require("@grpc/grpc-js");
const { Client, DOMAIN, KraiterError, NO_RETRY, Status, errorDetails } = require("kraiter-contacts");

const [address, apiKey] = process.argv.slice(2);

// A TCP proxy to `upstream` that cuts (destroys both sides of) the first connection
// whose server-to-client traffic passes `cutAfter` bytes: a list stream broken in the
// middle, whatever the client had buffered.
async function cuttingProxy(upstream, cutAfter) {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(":")), Number(upstream.slice(upstream.lastIndexOf(":") + 1))];
  const proxy = { connections: 0, cuts: 0 };
  const server = net.createServer((inbound) => {
    proxy.connections += 1;
    const outbound = net.connect(port, host);
    let carried = 0;
    const cut = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("data", (data) => outbound.write(data));
    outbound.on("data", (data) => {
      inbound.write(data);
      carried += data.length;
      if (carried > cutAfter && proxy.cuts === 0) {
        proxy.cuts += 1;
        cut();
      }
    });
    inbound.on("close", cut);
    outbound.on("close", cut);
    inbound.on("error", cut);
    outbound.on("error", cut);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.address = `127.0.0.1:${server.address().port}`;
  proxy.close = () => server.close();
  return proxy;
}

async function expectError(what, code, grpcCode, call) {
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof KraiterError, `${what}: a KraiterError, not ${err}`);
    assert.equal(err.code, code, `${what}: ${err.message}`);
    assert.equal(err.grpcCode, grpcCode, `${what}: ${err.message}`);
    assert.ok(err.details, `${what}: a message`);
    return err;
  }
  assert.fail(`${what}: expected ${code}, the call succeeded`);
}

function retryInfoIsDecoded() {
  const pack = (type, message) => ({
    typeUrl: `type.googleapis.com/google.rpc.${type}`,
    value: Buffer.from(errorDetails[type].encode(message).finish()),
  });
  const failed = (code, details) => {
    const metadata = new Metadata();
    metadata.set("grpc-status-details-bin", Buffer.from(Status.encode({ code, message: "m", details }).finish()));
    return { code, details: "m", metadata };
  };
  const limited = KraiterError.fromServiceError(
    failed(status.RESOURCE_EXHAUSTED, [
      pack("ErrorInfo", { reason: "RATE_LIMITED", domain: DOMAIN, metadata: {} }),
      pack("RetryInfo", { retryDelay: { seconds: 0, nanos: 300_000_000 } }),
    ]),
  );
  assert.equal(limited.code, "RATE_LIMITED");
  assert.equal(limited.retryAfterMs, 300);
  assert.ok(limited.retryable);
  const foreign = KraiterError.fromServiceError(
    failed(status.NOT_FOUND, [pack("ErrorInfo", { reason: "NOT_FOUND", domain: "example.com", metadata: {} })]),
  );
  assert.equal(foreign.code, null, "another domain's reason is not an SDK code");
  assert.ok(!foreign.retryable);
}

async function crudAndErrors(client) {
  const contacts = client.contacts;
  const alice = await contacts.create({
    email: "Alice@Example.com",
    properties: { firstName: "Alice", plan: "pro", seats: 3 },
  });
  assert.match(alice.id, /^con_/);
  assert.equal(alice.email, "Alice@Example.com");
  assert.deepEqual(alice.properties, { firstName: "Alice", plan: "pro", seats: 3 });
  assert.ok(alice.createdAt instanceof Date);
  assert.deepEqual(await contacts.get(alice.id), alice);
  assert.equal((await contacts.getByEmail("alice@example.COM"))?.id, alice.id);
  assert.equal(await contacts.getByEmail("nobody@example.com"), null, "getByEmail of an unknown address");

  const updated = await contacts.update(alice.id, { properties: { plan: "enterprise", seats: null } });
  assert.deepEqual(updated.properties, { firstName: "Alice", plan: "enterprise" });
  assert.ok(updated.etag && updated.etag !== alice.etag, "every write changes the etag");
  const upserted = await contacts.upsert({ email: "ALICE@example.com", properties: { trial: true } });
  assert.ok(!upserted.created && upserted.contact.id === alice.id);
  const bob = await contacts.upsert({ email: "bob@example.com", properties: { plan: "free" } });
  assert.ok(bob.created);
  assert.deepEqual(bob.contact.properties, { plan: "free" });

  await expectError("duplicate email", "CONFLICT", status.ALREADY_EXISTS, () =>
    contacts.create({ email: "ALICE@example.com" }),
  );
  await expectError("update to another contact's email", "CONFLICT", status.ALREADY_EXISTS, () =>
    contacts.update(bob.contact.id, { email: "alice@example.com" }),
  );
  const invalid = await expectError("invalid email", "VALIDATION_ERROR", status.INVALID_ARGUMENT, () =>
    contacts.create({ email: "not an email" }),
  );
  assert.equal(invalid.field, "email");
  assert.ok(invalid.violations[0].description);
  const stale = await expectError("stale etag", "ETAG_MISMATCH", status.ABORTED, () =>
    contacts.update(alice.id, { properties: { x: 1 }, etag: alice.etag }),
  );
  assert.equal(stale.field, null);
  assert.ok(!stale.retryable);
  const stranger = new Client(address, "kr_not_a_key");
  await expectError("unknown key", "UNAUTHORISED", status.UNAUTHENTICATED, () => stranger.contacts.get(alice.id));
  stranger.close();

  await contacts.delete(alice.id);
  await expectError("deleted contact", "NOT_FOUND", status.NOT_FOUND, () => contacts.get(alice.id));
  await expectError("delete again", "NOT_FOUND", status.NOT_FOUND, () => contacts.delete(alice.id));
  await expectError("sends of a deleted contact", "NOT_FOUND", status.NOT_FOUND, () =>
    contacts.getSends(alice.id).toArray(),
  );
  await contacts.delete(bob.contact.id);
}

async function paging(client) {
  const contacts = client.contacts;
  const wanted = [];
  for (let n = 0; n < 25; n++) {
    const email = `page${String(n).padStart(2, "0")}@example.com`;
    wanted.push((await contacts.create({ email, properties: { team: "Pager" } })).id);
  }
  await contacts.create({ email: "other@example.com", properties: { team: "hay" } });
  const all = [];
  for await (const contact of contacts.list({ search: "pager", limit: 10 })) all.push(contact.id);
  assert.deepEqual(all, wanted, "3 pages, in id order");
  const byEmail = [];
  // 6: CONTACT_ORDER_EMAIL_DESC, passed through to ListContactsRequest.order_by.
  for await (const contact of contacts.list({ search: "pager", limit: 10, orderBy: 6 })) byEmail.push(contact.email);
  assert.equal(byEmail.length, 25, "every contact in the email order");
  assert.deepEqual(byEmail, [...byEmail].sort().reverse(), "newest email first");
  assert.notDeepEqual(byEmail, [...byEmail].sort(), "the order reached the server");
  const first = contacts.list({ search: "pager", limit: 10, maxPages: 2 });
  assert.deepEqual((await first.toArray()).map((c) => c.id), wanted.slice(0, 20));
  assert.ok(first.cursor, "two pages, and the cursor after them");
  const rest = await contacts.list({ search: "pager", limit: 10, cursor: first.cursor }).toArray();
  assert.deepEqual(rest.map((c) => c.id), wanted.slice(20), "resumed from the cursor");
  const early = contacts.list({ search: "pager", limit: 1 });
  for await (const contact of early) {
    assert.equal(contact.id, wanted[0]);
    break; // cancels the stream
  }
  assert.deepEqual(await early.toArray(), [], "a list left early yields nothing more");
}

async function resumeOnUnavailable(client) {
  // Random padding, so that a compressed stream is as long: pages of 5 contacts are
  // about 8 KB on the wire, and the cut after 60 KB falls mid-stream.
  const ids = [];
  for (let n = 0; n < 120; n++) {
    const email = `resume${String(n).padStart(3, "0")}@example.com`;
    const padding = crypto.randomBytes(1200).toString("hex");
    ids.push((await client.contacts.create({ email, properties: { padding } })).id);
  }
  let proxy = await cuttingProxy(address, 60_000);
  let through = new Client(proxy.address, apiKey, { retry: { maxRetries: 5, initialBackoffMs: 10, maxBackoffMs: 2000 } });
  const seen = (await through.contacts.list({ search: "resume", limit: 5 }).toArray()).map((c) => c.id);
  through.close();
  proxy.close();
  assert.equal(proxy.cuts, 1, "the proxy cut the stream");
  assert.ok(proxy.connections >= 2, "the cut forced a reconnect");
  assert.deepEqual(seen, ids, `every contact once, in order (${seen.length} of ${ids.length})`);

  // The same cut without retries: the break is real, mid-stream, and UNAVAILABLE.
  proxy = await cuttingProxy(address, 60_000);
  through = new Client(proxy.address, apiKey, { retry: NO_RETRY });
  const partial = [];
  const err = await expectError("a cut without retries", "UNAVAILABLE", status.UNAVAILABLE, async () => {
    for await (const contact of through.contacts.list({ search: "resume", limit: 5 })) partial.push(contact.id);
  });
  through.close();
  proxy.close();
  assert.ok(err.retryable);
  assert.ok(partial.length > 0 && partial.length < ids.length, `${partial.length} contacts before the cut`);
  assert.deepEqual(partial, ids.slice(0, partial.length));
}

async function main() {
  retryInfoIsDecoded();
  const client = new Client(address, apiKey);
  await crudAndErrors(client);
  await paging(client);
  await resumeOnUnavailable(client);
  client.close();
  console.log("typescript client scenario passed");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
