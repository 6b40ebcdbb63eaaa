use chrono::{TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::*;
use crate::domain::{ContactId, ContactView, Email, Etag, PropertiesJson};
use crate::store::change_record_bytes;

/// The message as the generated types build it (the stored JSON parsed into a
/// `Struct` tree), as the feed sent it before it used `wire`.
fn generated(change: &ChangeRecord, token: String) -> pb::ContactChange {
    let contact = change.contact.as_ref().map(|view| {
        let properties: Map<String, Value> =
            serde_json::from_str(view.properties.as_str()).expect("an object");
        pb::Contact {
            properties: Some(convert::to_struct(properties)),
            id: view.id.as_str().to_owned(),
            email: view.email.as_str().to_owned(),
            suppressed: view.suppressed,
            unsubscribed: view.unsubscribed,
            created_at: Some(convert::timestamp(view.created_at)),
            updated_at: Some(convert::timestamp(view.updated_at)),
            etag: Etag::of(view.revision),
        }
    });
    pb::ContactChange {
        token,
        r#type: change_type(change.kind) as i32,
        contact_id: change.contact_id.as_str().to_owned(),
        contact,
        changed_fields: change.changed_fields.clone(),
        occurred_at: Some(convert::timestamp(change.occurred_at)),
    }
}

fn change(kind: ChangeKind, properties: Option<Value>, fields: &[&str]) -> ChangeRecord {
    let id = ContactId::from_trusted("con_01hzx3k9q2w8e7r6t5y4u3i2o1".into());
    let at = |s: i64| Utc.timestamp_opt(1_780_000_000 + s, 123_456_789).unwrap();
    ChangeRecord {
        position: ChangePosition { xid: 9, seq: 41 },
        kind,
        contact_id: id.clone(),
        contact: properties.map(|properties| ContactView {
            id,
            email: Email::from_trusted("zoë@example.com".into()),
            properties: PropertiesJson::from_trusted(properties.to_string()),
            suppressed: kind == ChangeKind::Suppressed,
            unsubscribed: kind == ChangeKind::Unsubscribed,
            created_at: at(0),
            updated_at: at(7),
            revision: 3,
        }),
        changed_fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        occurred_at: at(7),
    }
}

#[test]
fn a_change_reads_back_as_the_generated_contact_change() {
    let props = json!({"plan": "pro", "seats": 12, "ratio": -0.25, "beta": true,
        "gone": null, "tags": ["a", {"b": [1, "é\n"]}], "long": "x".repeat(300), "o": {}});
    let changes = [
        change(
            ChangeKind::Created,
            Some(props.clone()),
            &["email", "properties.plan"],
        ),
        change(ChangeKind::Updated, Some(json!({})), &["properties.seats"]),
        change(ChangeKind::Suppressed, Some(props), &["suppressed"]),
        change(
            ChangeKind::Unsubscribed,
            Some(json!({"k": 1})),
            &["unsubscribed"],
        ),
        change(ChangeKind::Deleted, None, &[]),
    ];
    for change in &changes {
        let token = format!("token-of-{}", change.position.encode());
        let wire = change_message(change, token.clone()).expect("encodes");
        let decoded = pb::ContactChange::decode(wire.encode_to_vec().as_slice())
            .expect("decodes as the real ContactChange");
        assert_eq!(decoded, generated(change, token), "{:?}", change.kind);
        assert_eq!(
            decoded.contact.is_none(),
            change.kind == ChangeKind::Deleted
        );
    }
}

/// A batch's messages, made once for every watcher sharing its read, are the
/// bytes each change encoded alone would be, up to the first change that fails.
#[test]
fn a_batch_encoded_once_is_each_change_encoded_alone_up_to_a_failure() {
    let key = crate::domain::CursorKey::from_bytes([7; 32]);
    let tenant = TenantId::parse("t").expect("valid");
    let tokens = ListCursors::new(&key, &tenant, CursorKind::Changes, &[]);
    let mut changes: Vec<ChangeRecord> = (0..5)
        .map(|i| {
            let mut c = change(ChangeKind::Updated, Some(json!({"n": i, "s": "é"})), &["n"]);
            c.position.seq = i;
            c
        })
        .collect();
    changes.push(change(ChangeKind::Deleted, None, &[]));
    let encoded = BatchMessages::of(&changes, &tokens);
    assert_eq!(encoded.0.len(), changes.len());
    for (change, message) in changes.iter().zip(&encoded.0) {
        let token = tokens.next(Some(change.position.encode()));
        let alone = change_message(change, token.clone()).expect("encodes");
        assert_eq!(message.encode_to_vec(), alone.encode_to_vec());
        let decoded = pb::ContactChange::decode(message.encode_to_vec().as_slice())
            .expect("decodes as the real ContactChange");
        assert_eq!(decoded, generated(change, token));
    }
    if let Some(view) = changes[3].contact.as_mut() {
        view.properties = PropertiesJson::from_trusted("[1]".into());
    }
    let cut = BatchMessages::of(&changes, &tokens);
    assert_eq!(cut.0.len(), 3, "messages stop before the change that fails");
    let batch = BatchMessages::attach(
        ChangeBatch {
            changes,
            ..Default::default()
        },
        &tokens,
    );
    assert_eq!(shared_messages(&batch).map(|e| e.0.len()), Some(3));
}

/// A read-ahead takes as many changes as fit in `READ_BYTES` at the size of the
/// batch before it, within its bounds, and no more than the watch still wants.
#[test]
fn a_read_aheads_limit_follows_the_bytes_of_the_batch_before() {
    let small: Vec<ChangeRecord> = (0..BATCH)
        .map(|_| change(ChangeKind::Created, Some(json!({"n": 1})), &["email"]))
        .collect();
    assert_eq!(next_limit(&small, None), MAX_BATCH);
    assert_eq!(next_limit(&small, Some(250)), 250);
    assert_eq!(next_limit(&small, Some(u64::MAX)), MAX_BATCH);
    let deleted: Vec<ChangeRecord> = (0..BATCH)
        .map(|_| change(ChangeKind::Deleted, None, &[]))
        .collect();
    assert_eq!(next_limit(&deleted, None), MAX_BATCH);
    let filler = "x".repeat(20_000);
    let large: Vec<ChangeRecord> = (0..BATCH)
        .map(|_| change(ChangeKind::Updated, Some(json!({"f": filler})), &["f"]))
        .collect();
    let per_change = change_record_bytes(&large[0]);
    assert_eq!(next_limit(&large, None) as usize, READ_BYTES / per_change);
    let huge = "x".repeat(200_000);
    let huge: Vec<ChangeRecord> = (0..3)
        .map(|_| change(ChangeKind::Updated, Some(json!({"f": huge})), &["f"]))
        .collect();
    assert_eq!(next_limit(&huge, None), MIN_BATCH);
}

#[test]
fn stored_text_that_is_not_an_object_fails_the_change() {
    let mut bad = change(ChangeKind::Created, Some(json!({})), &[]);
    if let Some(view) = bad.contact.as_mut() {
        view.properties = PropertiesJson::from_trusted("[1]".into());
    }
    assert!(change_message(&bad, String::new()).is_err());
}
