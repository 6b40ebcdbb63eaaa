// Auto-paging: a server-streamed list (one message per page, each with the cursor that
// resumes after it) as an async iterator of items that survives a broken connection by
// reopening the list from the last cursor it received.

import type { ClientReadableStream } from "@grpc/grpc-js";

import { type RetryPolicy, retryAfter, sleep, toKraiterError } from "./errors";

/** A list request: it can be pointed at a cursor and limited in pages. */
export interface PagedRequest {
  cursor: string;
  maxPages: number;
}

/**
 * The items of every page of a list, as an async iterator (`for await`).
 *
 * On UNAVAILABLE (the server's, or a connection that broke mid-stream) it reopens the
 * list from `cursor`, the cursor of the last page received, so every item arrives once
 * and in order; failures in a row are bounded by the `RetryPolicy`, and a page received
 * resets the count. Any other failure, or one too many, is thrown as `KraiterError`.
 * Leaving a `for await` loop early (or `close()`) cancels the stream; `cursor` can be
 * kept to continue later.
 */
export class Pages<T> implements AsyncIterableIterator<T> {
  private call: ClientReadableStream<unknown> | null = null;
  private pages: AsyncIterator<unknown> | null = null;
  private buffer: T[] = [];
  private done = false;

  constructor(
    private readonly open: (request: PagedRequest) => ClientReadableStream<unknown>,
    private readonly request: PagedRequest,
    private readonly items: (page: unknown) => { items: T[]; nextCursor: string },
    private readonly retry: RetryPolicy,
  ) {}

  /** The cursor the next page resumes from (empty before the first page). */
  get cursor(): string {
    return this.request.cursor;
  }

  [Symbol.asyncIterator](): Pages<T> {
    return this;
  }

  async next(): Promise<IteratorResult<T>> {
    while (this.buffer.length === 0) {
      if (this.done) return { done: true, value: undefined };
      await this.nextPage();
    }
    return { done: false, value: this.buffer.shift() as T };
  }

  async return(): Promise<IteratorResult<T>> {
    this.close();
    return { done: true, value: undefined };
  }

  /** Stops the list and cancels its stream. */
  close(): void {
    this.done = true;
    this.buffer = [];
    this.drop();
  }

  /** Every remaining item, in order. */
  async toArray(): Promise<T[]> {
    const all: T[] = [];
    for await (const item of this) all.push(item);
    return all;
  }

  private async nextPage(): Promise<void> {
    let failures = 0;
    for (;;) {
      if (this.pages === null) {
        this.call = this.open({ ...this.request });
        // Failures surface through the iterator; this keeps a late one (after a
        // cancel) from being an unhandled 'error' event.
        this.call.on("error", () => {});
        this.pages = this.call[Symbol.asyncIterator]();
      }
      let result: IteratorResult<unknown>;
      try {
        result = await this.pages.next();
      } catch (thrown) {
        this.drop();
        const err = toKraiterError(thrown);
        failures += 1;
        const wait = retryAfter(err, failures, this.retry);
        if (wait === null) {
          this.done = true;
          throw err;
        }
        await sleep(wait);
        continue;
      }
      if (result.done) {
        this.pages = null;
        this.call = null;
        this.done = true;
        return;
      }
      this.advance(result.value);
      return;
    }
  }

  /** Takes the page's items and moves the request past it: its cursor, and one page
   * fewer to go. */
  private advance(page: unknown): void {
    const { items, nextCursor } = this.items(page);
    this.buffer.push(...items);
    if (nextCursor) this.request.cursor = nextCursor;
    else this.done = true;
    if (this.request.maxPages === 1) this.done = true;
    else if (this.request.maxPages > 1) this.request.maxPages -= 1;
    if (this.done) this.drop();
  }

  private drop(): void {
    this.call?.cancel();
    this.call = null;
    this.pages = null;
  }
}
