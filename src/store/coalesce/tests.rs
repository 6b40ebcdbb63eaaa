use std::collections::HashMap;

use super::*;

struct Row(&'static str, String);

impl QueuedRow for Row {
    fn id(&self) -> &str {
        self.0
    }
    fn claim(&self) -> &str {
        &self.1
    }
}

fn job(id: &'static str, email_key: &str) -> (Job<Row>, oneshot::Receiver<Written>) {
    let (reply, answer) = oneshot::channel();
    let row = Row(id, email_key.to_owned());
    let state = Arc::new(AtomicU8::new(WAITING));
    (Job { row, reply, state }, answer)
}

fn line(tenant: &str) -> Line {
    Line {
        tenant: TenantId::parse(tenant).expect("tenant"),
        key_hash: Some([0; 32]),
    }
}

/// A compare-and-set of a revision per contact, kept in memory: the rule under
/// test is who goes in a batch and what each caller is told, not the database.
struct Revisions(Mutex<HashMap<String, i64>>);

struct Update {
    contact: String,
    expected: i64,
}

impl QueuedRow for Update {
    fn id(&self) -> &str {
        &self.contact
    }
    fn claim(&self) -> &str {
        &self.contact
    }
}

impl Revisions {
    fn swap(&self, row: &Update) -> bool {
        let mut revisions = self.0.lock().expect("not poisoned");
        let revision = revisions.get_mut(&row.contact).expect("a contact");
        let current = *revision == row.expected;
        if current {
            *revision += 1;
        }
        current
    }
}

#[async_trait]
impl BatchWriter for Revisions {
    type Row = Update;

    async fn write_one(&self, _: &TenantId, _: Option<&[u8; 32]>, row: &Update) -> Written {
        Ok(self.swap(row))
    }

    async fn write_many(&self, _: &Line, rows: &[Update]) -> StoreResult<HashSet<String>> {
        Ok(rows
            .iter()
            .filter(|row| self.swap(row))
            .map(|row| row.contact.clone())
            .collect())
    }
}

fn update(contact: &str, expected: i64) -> (Job<Update>, oneshot::Receiver<Written>) {
    let (reply, answer) = oneshot::channel();
    let row = Update {
        contact: contact.to_owned(),
        expected,
    };
    let state = Arc::new(AtomicU8::new(TAKEN));
    (Job { row, reply, state }, answer)
}

/// Of two updates of one contact in a batch, the first is stale and the second
/// current: the second is written and told so (an etag'd update told otherwise
/// would be refused ETAG_MISMATCH with its etag current).
#[tokio::test]
async fn a_write_held_behind_one_of_its_claim_gets_its_own_answer() {
    let revisions = HashMap::from([("c".to_owned(), 5), ("d".to_owned(), 1)]);
    let writer = Revisions(Mutex::new(revisions));
    let (stale, stale_answer) = update("c", 4);
    let (current, current_answer) = update("c", 5);
    let (again, again_answer) = update("c", 5);
    let (other, other_answer) = update("d", 1);
    write_batch(&writer, &line("t"), vec![stale, current, again, other]).await;
    let answer = |mut a: oneshot::Receiver<Written>| a.try_recv().expect("answered").expect("ok");
    assert!(!answer(stale_answer), "stale: not written");
    assert!(answer(current_answer), "current: written");
    assert!(!answer(again_answer), "the revision it expected has moved");
    assert!(answer(other_answer));
    assert_eq!(writer.0.lock().expect("not poisoned")["c"], 6);
}

#[test]
fn a_batch_sends_each_claim_once_in_id_order() {
    let jobs = vec![job("c3", "a").0, job("c1", "b").0, job("c2", "a").0];
    let (sent, held) = split(jobs);
    let sent: Vec<&str> = sent.iter().map(|j| j.row.id()).collect();
    let held: Vec<&str> = held.iter().map(|j| j.row.id()).collect();
    assert_eq!(sent, ["c1", "c3"], "the first create of `a` goes");
    assert_eq!(held, ["c2"]);
}

/// A caller that gave up waiting wrote nothing; one whose write a batch took
/// cannot give up.
#[test]
fn a_withdrawn_write_is_never_taken_and_a_taken_one_never_withdrawn() {
    let mut waiting: Waiting<Row> = Lines::new(MAX_WAITING, MAX_WAITING_PER_LINE, MAX_BATCH);
    let (withdrawn, _a) = job("w", "w@x");
    let (taken, _b) = job("t", "t@x");
    let (withdrawn_state, taken_state) = (withdrawn.state.clone(), taken.state.clone());
    assert!(waiting.push(line("t"), withdrawn).is_ok());
    assert!(waiting.push(line("t"), taken).is_ok());
    assert!(settle(&withdrawn_state, WITHDRAWN));
    let (_, batch) = waiting.next_batch(take).expect("a batch");
    let ids: Vec<&str> = batch.iter().map(|j| j.row.id()).collect();
    assert_eq!(ids, ["t"]);
    assert!(!settle(&taken_state, WITHDRAWN), "taken first");
    assert!(waiting.next_batch(take).is_none());
}

#[test]
fn lines_take_turns_and_full_lines_refuse() {
    let mut waiting: Waiting<Row> = Lines::new(MAX_WAITING, MAX_WAITING_PER_LINE, MAX_BATCH);
    let flood = line("t");
    let quiet = line("quiet");
    let mut answers = Vec::new();
    for i in 0..MAX_WAITING_PER_LINE {
        let (j, a) = job("f", &format!("{i}@x"));
        answers.push(a);
        assert!(waiting.push(flood.clone(), j).is_ok());
    }
    assert!(
        waiting
            .push(flood.clone(), job("more", "more@x").0)
            .is_err()
    );
    let (j, a) = job("q", "q@x");
    answers.push(a);
    assert!(waiting.push(quiet.clone(), j).is_ok());
    let (first, batch) = waiting.next_batch(take).expect("a batch");
    assert_eq!((first, batch.len()), (flood.clone(), MAX_BATCH));
    let (second, batch) = waiting.next_batch(take).expect("a batch");
    assert_eq!((second, batch.len()), (quiet, 1), "the quiet line is next");
}
