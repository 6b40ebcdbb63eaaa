// The client: `new Client(address, apiKey).contacts` reads like the SDK's
// `kraiter.contacts` namespace.

import {
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientReadableStream,
  type Interceptor,
  InterceptingCall,
  Metadata,
  type ServiceError,
  credentials as grpcCredentials,
} from "@grpc/grpc-js";

import { DEFAULT_RETRY, type RetryPolicy, retryAfter, sleep, toKraiterError } from "./errors";
import type { ScheduledSend, SegmentMembership, Send, SequenceEnrolment, TimelineEntry } from "./gen/kraiter/contacts/v1/activity";
import { ActivityServiceClient } from "./gen/kraiter/contacts/v1/activity_service";
import type { Contact } from "./gen/kraiter/contacts/v1/contact";
import type { ContactFilter, ContactOrder } from "./gen/kraiter/contacts/v1/filter";
import {
  type BatchGetContactsResponse,
  ContactsServiceClient,
  type ListContactScheduledSendsResponse,
  type ListContactSendsResponse,
  ListContactsRequest,
  type ListContactsResponse,
  type ListContactTimelineResponse,
  TimelineOrder,
} from "./gen/kraiter/contacts/v1/contacts_service";
import { type PagedRequest, Pages } from "./pages";

/** Contact properties: any JSON object (`null` removes a key in an update). */
export type Properties = { [key: string]: unknown };

export interface ClientOptions {
  /** TLS and the like; insecure (plaintext) when absent. */
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
  /** How reads and lists are retried; `NO_RETRY` to see every failure. */
  retry?: RetryPolicy;
  /** A deadline for each unary call, in milliseconds. */
  timeoutMs?: number;
}

/**
 * A connection to the service that sends `authorization: Bearer <apiKey>` on every
 * call. `contacts` is the SDK's contacts namespace, `activity` the generated ingestion
 * client (`ActivityService`), already authenticated.
 */
export class Client {
  readonly contacts: Contacts;
  readonly activity: ActivityServiceClient;
  private readonly raw: ContactsServiceClient;

  /** `address` is `host:port`. */
  constructor(address: string, apiKey: string, options: ClientOptions = {}) {
    const credentials = options.credentials ?? grpcCredentials.createInsecure();
    const clientOptions = { ...options.channelOptions, interceptors: [apiKeyInterceptor(apiKey)] };
    this.raw = new ContactsServiceClient(address, credentials, clientOptions);
    // The ingestion client shares the connection of the contacts client.
    this.activity = new ActivityServiceClient(address, credentials, {
      ...clientOptions,
      channelOverride: this.raw.getChannel(),
    });
    this.contacts = new Contacts(this.raw, options.retry ?? DEFAULT_RETRY, options.timeoutMs);
  }

  close(): void {
    this.raw.close();
  }
}

function apiKeyInterceptor(apiKey: string): Interceptor {
  const value = `Bearer ${apiKey}`;
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", value);
        next(metadata, listener);
      },
    });
}

type Unary<Req, Resp> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Resp) => void,
) => unknown;

/**
 * `create`, `get`, `getByEmail`, `list`, `update`, `delete`, `upsert` and the
 * per-contact reads. Reads and lists are retried on UNAVAILABLE (see `RetryPolicy`);
 * writes are not. Every failure is a `KraiterError`.
 */
export class Contacts {
  constructor(
    private readonly raw: ContactsServiceClient,
    private readonly retry: RetryPolicy,
    private readonly timeoutMs?: number,
  ) {}

  /** `contacts.create`: CONFLICT when the tenant has the email already. */
  create(params: { email: string; properties?: Properties; requestId?: string }): Promise<Contact> {
    const request = { email: params.email, properties: params.properties, requestId: params.requestId ?? "" };
    return this.write(this.raw.createContact, request);
  }

  /** `contacts.get`: NOT_FOUND when the tenant has no such contact. */
  get(id: string): Promise<Contact> {
    return this.read(this.raw.getContact, { id });
  }

  /** `contacts.getByEmail` (ignoring case): `null` when there is none. */
  async getByEmail(email: string): Promise<Contact | null> {
    const response = await this.read(this.raw.getContactByEmail, { email });
    return response.contact ?? null;
  }

  /**
   * `contacts.list`: every matching contact in id order, page after page (`limit`
   * items a page), from `cursor`, stopping after `maxPages` (0: to the end).
   */
  list(
    params: {
      search?: string;
      limit?: number;
      cursor?: string;
      suppressed?: boolean;
      maxPages?: number;
      filter?: ContactFilter;
      orderBy?: ContactOrder;
    } = {},
  ): Pages<Contact> {
    // fromPartial: fields the contract adds later (a filter, an order) take their
    // defaults, so this code keeps compiling against newer protos.
    const request = ListContactsRequest.fromPartial({
      search: params.search ?? "",
      limit: params.limit ?? 0,
      cursor: params.cursor ?? "",
      suppressed: params.suppressed,
      maxPages: params.maxPages ?? 0,
      filter: params.filter,
      orderBy: params.orderBy,
    });
    return this.pages(
      (r) => this.raw.listContacts(ListContactsRequest.fromPartial({ ...request, ...r })),
      request,
      (p: ListContactsResponse) => ({ items: p.contacts, nextCursor: p.nextCursor }),
    );
  }

  /**
   * `contacts.update`: only what is given changes; a property set to `null` is
   * removed. With `etag`, only that version is changed (else ETAG_MISMATCH).
   */
  update(
    id: string,
    params: { email?: string; properties?: Properties; etag?: string; requestId?: string },
  ): Promise<Contact> {
    const request = {
      id,
      email: params.email,
      properties: params.properties,
      etag: params.etag ?? "",
      requestId: params.requestId ?? "",
    };
    return this.write(this.raw.updateContact, request);
  }

  /** `contacts.delete`: erases the contact and all its activity. */
  async delete(id: string, params: { etag?: string; requestId?: string } = {}): Promise<void> {
    await this.write(this.raw.deleteContact, { id, etag: params.etag ?? "", requestId: params.requestId ?? "" });
  }

  /** Creates the contact with `email`, or merges `properties` into the one that has it. */
  async upsert(params: {
    email: string;
    properties?: Properties;
    requestId?: string;
  }): Promise<{ contact: Contact; created: boolean }> {
    const request = { email: params.email, properties: params.properties, requestId: params.requestId ?? "" };
    const response = await this.write(this.raw.upsertContact, request);
    if (!response.contact) throw new Error("UpsertContact answered without a contact");
    return { contact: response.contact, created: response.created };
  }

  /** Up to 1,000 contacts by id and by email; `missing` lists those not found. */
  batchGet(params: { ids?: string[]; emails?: string[] }): Promise<BatchGetContactsResponse> {
    return this.read(this.raw.batchGetContacts, { ids: params.ids ?? [], emails: params.emails ?? [] });
  }

  /** `contacts.getSends`: the contact's sends, newest first. */
  getSends(id: string, params: { limit?: number; cursor?: string } = {}): Pages<Send> {
    const request = { id, limit: params.limit ?? 0, cursor: params.cursor ?? "", maxPages: 0 };
    return this.pages(
      (r) => this.raw.listContactSends({ ...request, ...r }),
      request,
      (p: ListContactSendsResponse) => ({ items: p.sends, nextCursor: p.nextCursor }),
    );
  }

  /** `contacts.getScheduled`: pending scheduled sends, earliest first. */
  getScheduled(id: string, params: { limit?: number; cursor?: string } = {}): Pages<ScheduledSend> {
    const request = { id, limit: params.limit ?? 0, cursor: params.cursor ?? "", maxPages: 0 };
    return this.pages(
      (r) => this.raw.listContactScheduledSends({ ...request, ...r }),
      request,
      (p: ListContactScheduledSendsResponse) => ({ items: p.scheduledSends, nextCursor: p.nextCursor }),
    );
  }

  /** `contacts.getSequences`: active and paused enrolments (all with `includeFinished`). */
  async getSequences(id: string, params: { includeFinished?: boolean } = {}): Promise<SequenceEnrolment[]> {
    const request = { id, includeFinished: params.includeFinished ?? false };
    return (await this.read(this.raw.listContactSequences, request)).enrolments;
  }

  /** `contacts.getSegments`: the contact's current segment memberships. */
  async getSegments(id: string): Promise<SegmentMembership[]> {
    return (await this.read(this.raw.listContactSegments, { id })).memberships;
  }

  /** `contacts.getTimeline`: newest first, or oldest first; only `types` if given. */
  getTimeline(
    id: string,
    params: { limit?: number; cursor?: string; oldestFirst?: boolean; types?: string[] } = {},
  ): Pages<TimelineEntry> {
    const request = {
      id,
      limit: params.limit ?? 0,
      cursor: params.cursor ?? "",
      maxPages: 0,
      order: params.oldestFirst ? TimelineOrder.TIMELINE_ORDER_OLDEST_FIRST : TimelineOrder.TIMELINE_ORDER_NEWEST_FIRST,
      types: params.types ?? [],
    };
    return this.pages(
      (r) => this.raw.listContactTimeline({ ...request, ...r }),
      request,
      (p: ListContactTimelineResponse) => ({ items: p.entries, nextCursor: p.nextCursor }),
    );
  }

  private callOptions(): Partial<CallOptions> {
    return this.timeoutMs === undefined ? {} : { deadline: Date.now() + this.timeoutMs };
  }

  private call<Req, Resp>(method: Unary<Req, Resp>, request: Req): Promise<Resp> {
    return new Promise((resolve, reject) => {
      method.call(this.raw, request, new Metadata(), this.callOptions(), (err, response) =>
        err ? reject(err) : resolve(response),
      );
    });
  }

  private async write<Req, Resp>(method: Unary<Req, Resp>, request: Req): Promise<Resp> {
    try {
      return await this.call(method, request);
    } catch (thrown) {
      throw toKraiterError(thrown);
    }
  }

  private async read<Req, Resp>(method: Unary<Req, Resp>, request: Req): Promise<Resp> {
    for (let failures = 1; ; failures++) {
      try {
        return await this.call(method, request);
      } catch (thrown) {
        const err = toKraiterError(thrown);
        const wait = retryAfter(err, failures, this.retry);
        if (wait === null) throw err;
        await sleep(wait);
      }
    }
  }

  private pages<Resp, T>(
    open: (request: PagedRequest) => ClientReadableStream<Resp>,
    request: PagedRequest,
    items: (page: Resp) => { items: T[]; nextCursor: string },
  ): Pages<T> {
    return new Pages<T>(
      open as (request: PagedRequest) => ClientReadableStream<unknown>,
      request,
      items as (page: unknown) => { items: T[]; nextCursor: string },
      this.retry,
    );
  }
}
