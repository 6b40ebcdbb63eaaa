"""Auto-paging: a server-streamed list (one message per page, each with the cursor
that resumes after it) as an iterator of items that survives a broken connection by
reopening the list from the last cursor it received."""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Generic, Iterator, TypeVar

import grpc

from ._errors import KraiterError, RetryPolicy, retry_after

T = TypeVar("T")


class Pages(Generic[T]):
    """An iterator of the items of every page of a list.

    On UNAVAILABLE (the server's, or a connection that broke mid-stream) it reopens
    the list from ``cursor``, the cursor of the last page received, so every item
    arrives once and in order; failures in a row are bounded by the ``RetryPolicy``,
    and a page received resets the count. Any other failure, or one too many, is
    raised as ``KraiterError``. ``close()`` (or leaving a ``with`` block) cancels the
    stream; ``cursor`` can be kept to continue later.
    """

    def __init__(
        self,
        open_call: Callable[[object], Iterator[object]],
        request,
        items: str,
        retry: RetryPolicy,
    ):
        self._open = open_call
        self._request = request
        self._items = items
        self._retry = retry
        self._call = None
        self._buffer: deque[T] = deque()
        self._done = False

    @property
    def cursor(self) -> str:
        """The cursor the next page resumes from (empty before the first page)."""
        return self._request.cursor

    def __iter__(self) -> Pages[T]:
        return self

    def __next__(self) -> T:
        while not self._buffer:
            if self._done:
                raise StopIteration
            self._next_page()
        return self._buffer.popleft()

    def close(self) -> None:
        self._done = True
        self._buffer.clear()
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def __enter__(self) -> Pages[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_page(self) -> None:
        failures = 0
        while True:
            if self._call is None:
                self._call = self._open(self._request)
            try:
                page = next(self._call)
            except StopIteration:
                self._call = None
                self._done = True
                return
            except grpc.RpcError as rpc_err:
                self._call = None
                err = KraiterError.from_rpc_error(rpc_err)
                failures += 1
                wait = retry_after(err, failures, self._retry)
                if wait is None:
                    self._done = True
                    raise err from rpc_err
                time.sleep(wait)
                continue
            self._advance(page)
            return

    def _advance(self, page) -> None:
        """Takes the page's items and moves the request past it: its cursor, and one
        page fewer to go."""
        self._buffer.extend(getattr(page, self._items))
        if page.next_cursor:
            self._request.cursor = page.next_cursor
        else:
            self._done = True
        if self._request.max_pages == 1:
            self._done = True
        elif self._request.max_pages > 1:
            self._request.max_pages -= 1
        if self._done and self._call is not None:
            self._call.cancel()
            self._call = None
