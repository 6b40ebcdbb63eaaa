use std::sync::Arc;

use super::*;

/// The pages a reader cuts from strings of these lengths (keyed by their index),
/// as the lengths of their items, each page with its resume key.
async fn pages_of(
    lengths: &[usize],
    limit: i32,
    budget: usize,
) -> Vec<(Vec<usize>, Option<usize>)> {
    pages_cut(lengths, limit, budget, usize::MAX).await
}

/// `pages_of` with a store that stops a query after `per_query` rows, as a store
/// stops one at its byte budget, saying that more follow.
async fn pages_cut(
    lengths: &[usize],
    limit: i32,
    budget: usize,
    per_query: usize,
) -> Vec<(Vec<usize>, Option<usize>)> {
    let rows: Arc<Vec<(usize, String)>> =
        Arc::new(lengths.iter().map(|&n| "x".repeat(n)).enumerate().collect());
    let fetch = move |after: Option<usize>, limit: u32| {
        let rows = rows.clone();
        async move {
            let from = after.map_or(0, |after| after + 1);
            let left = rows.len().saturating_sub(from);
            let take = (limit as usize).min(per_query);
            Ok(Fetched {
                rows: rows.iter().skip(from).take(take).cloned().collect(),
                cut_short: take < limit as usize && left > take,
            })
        }
    };
    let page_size = PageSize::parse(limit).expect("a valid limit");
    let mut reader = PageReader::new(
        fetch,
        |row: &(usize, String)| row.0,
        |row: (usize, String)| Ok(row.1),
        None,
        page_size,
        CURSOR_ROOM + budget,
        None,
    );
    reader.start(None, 1);
    let mut pages = Vec::new();
    while let Some(page) = reader.next_page(0, std::future::pending()).await {
        let page = page.expect("no error");
        let lengths = page.items.iter().map(String::len).collect();
        pages.push((lengths, page.resume));
    }
    pages
}

/// Encoded length of an item of `n` bytes in a page.
fn len(n: usize) -> usize {
    prost::encoding::message::encoded_len(1, &"x".repeat(n))
}

#[tokio::test]
async fn pages_end_before_the_budget_and_resume_after_their_last_item() {
    // Items of 100 bytes, three to a budget; queries of five rows, so pages and
    // queries end at different items.
    let lengths = vec![100; 23];
    let pages = pages_of(&lengths, 5, 3 * len(100) + 1).await;
    let sizes: Vec<usize> = pages.iter().map(|(items, _)| items.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 3, 3, 3, 3, 2]);
    let mut seen = 0;
    for (i, (items, resume)) in pages.iter().enumerate() {
        seen += items.len();
        let want = (seen < lengths.len()).then(|| seen - 1);
        assert_eq!(*resume, want, "resume key of page {i}");
    }
    assert_eq!(seen, lengths.len());
}

#[tokio::test]
async fn queries_cut_short_by_the_store_still_give_full_pages_and_every_row_once() {
    let lengths = vec![10; 23];
    let pages = pages_cut(&lengths, 5, 10_000, 2).await;
    let sizes: Vec<usize> = pages.iter().map(|(items, _)| items.len()).collect();
    assert_eq!(
        sizes,
        [5, 5, 5, 5, 3],
        "pages span the store's short queries"
    );
    let resumes: Vec<Option<usize>> = pages.iter().map(|(_, resume)| *resume).collect();
    assert_eq!(resumes, [Some(4), Some(9), Some(14), Some(19), None]);
    // A cut that ends exactly at the list's end leaves no empty last page.
    let pages = pages_cut(&[10; 4], 5, 10_000, 2).await;
    assert_eq!(pages, [(vec![10; 4], None)]);
}

/// A row that fails to convert ends the stream with its error after the pages
/// before it, and no query after it is started: the next query starts once a
/// query's rows are fetched, before they are converted, so it is aborted.
#[tokio::test]
async fn a_row_that_fails_to_convert_ends_the_stream_after_the_pages_before_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    // Rows 0..40, one page of 5 per query; row 12 fails.
    let fetch = move |after: Option<usize>, limit: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let from = after.map_or(0, |after| after + 1);
            Ok(Fetched::from(
                (from..40).take(limit as usize).collect::<Vec<_>>(),
            ))
        }
    };
    let convert = |row: usize| match row {
        12 => Err(ApiError::from(StoreError::internal("row 12 is not JSON"))),
        _ => Ok(row.to_string()),
    };
    let page_size = PageSize::parse(5).expect("a valid limit");
    let mut reader = PageReader::new(
        fetch,
        |row: &usize| *row,
        convert,
        None,
        page_size,
        1 << 20,
        None,
    );
    reader.start(None, 1);
    let mut pages = Vec::new();
    let failed = loop {
        match reader.next_page(0, std::future::pending()).await {
            Some(Ok(page)) => pages.push(page.items),
            Some(Err(err)) => break err,
            None => panic!("the stream ended without the row's error"),
        }
    };
    assert_eq!(
        pages,
        [["0", "1", "2", "3", "4"], ["5", "6", "7", "8", "9"]]
    );
    assert!(matches!(failed, ApiError::Store(_)), "{failed:?}");
    assert!(reader.next.is_none() && reader.unread_after.is_none());
    // Rows 0-4, 5-9, 10-14 (the failing one) and 15-19, started as 10-14 came
    // in and aborted at the failure.
    assert_eq!(fetches.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_item_over_the_budget_has_a_page_of_its_own() {
    let lengths = [10, 10, 5_000, 10, 10, 10];
    let pages = pages_of(&lengths, 1000, 1_000).await;
    let items: Vec<Vec<usize>> = pages.into_iter().map(|(items, _)| items).collect();
    assert_eq!(items, [vec![10, 10], vec![5_000], vec![10, 10, 10]]);
}

#[tokio::test]
async fn limit_still_bounds_pages_of_small_items_and_an_empty_list_has_one_page() {
    let pages = pages_of(&[1; 7], 3, 1 << 20).await;
    let sizes: Vec<usize> = pages.iter().map(|(items, _)| items.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(pages_of(&[], 3, 1 << 20).await, [(vec![], None)]);
}
