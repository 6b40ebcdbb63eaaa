//! `contacts export`: ListContacts, page after page (resuming from the last cursor if
//! the connection breaks), written to stdout as JSON Lines or CSV.

use std::io::Write;

use anyhow::Context;
use futures_util::StreamExt;
use kraiter_contacts::api::convert::from_struct;
use kraiter_contacts::client::{Client, pb};
use kraiter_contacts::config::{ExportArgs, ExportFormat};
use serde_json::{Map, Value, json};

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.remote.addr, &args.remote.key)
        .await
        .with_context(|| format!("cannot connect to `{}`", args.remote.addr))?;
    let client = if args.primary {
        client.with_primary_reads()
    } else {
        client
    };
    let mut contacts = client.contacts().list(pb::ListContactsRequest {
        search: args.search,
        suppressed: args.suppressed,
        limit: 1000,
        ..Default::default()
    });
    let out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let mut sink = match args.format {
        ExportFormat::Jsonl => Sink::Jsonl(out),
        ExportFormat::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(CSV_HEADER)?;
            Sink::Csv(Box::new(csv))
        }
    };
    let mut count = 0u64;
    while let Some(contact) = contacts.next().await {
        let line = json_of(contact.context("the export stopped")?)?;
        match &mut sink {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
            Sink::Csv(csv) => csv.write_record(csv_record(&line))?,
        }
        count += 1;
    }
    match &mut sink {
        Sink::Jsonl(out) => out.flush()?,
        Sink::Csv(csv) => csv.flush()?,
    }
    eprintln!("exported {count} contacts");
    Ok(())
}

enum Sink<W: Write> {
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
}

const CSV_HEADER: [&str; 7] = [
    "id",
    "email",
    "suppressed",
    "unsubscribed",
    "created_at",
    "updated_at",
    "properties",
];

/// A contact as JSON, the shape `contacts import` reads back.
fn json_of(contact: pb::Contact) -> anyhow::Result<Value> {
    let properties = match contact.properties {
        Some(properties) => from_struct(properties, "properties")?,
        None => Map::new(),
    };
    Ok(json!({
        "id": contact.id,
        "email": contact.email,
        "properties": properties,
        "suppressed": contact.suppressed,
        "unsubscribed": contact.unsubscribed,
        "created_at": time(contact.created_at),
        "updated_at": time(contact.updated_at),
        "etag": contact.etag,
    }))
}

fn time(at: Option<prost_types::Timestamp>) -> Value {
    let at = at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32));
    match at {
        Some(at) => Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        None => Value::Null,
    }
}

fn csv_record(line: &Value) -> Vec<String> {
    CSV_HEADER
        .iter()
        .map(|column| match &line[*column] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect()
}
