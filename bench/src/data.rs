//! The synthetic tenant: deterministic contacts that look like a real email list,
//! built through the domain types so they are exactly what the service would store.
//! Ids and emails are functions of the contact's number, so pgbench scripts can
//! compute them in SQL and hit the same rows the gRPC scenarios hit.

use chrono::{DateTime, Duration, Utc};
use kraiter_contacts::domain::{
    Contact, ContactId, ContactRef, Email, NewSend, Properties, SendRecord, SendSource, SendStatus,
    TenantId, TimelineEntry, contact_created,
};
use serde_json::{Map, Value, json};

pub const DOMAINS: [&str; 8] = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "example.com",
    "acme.io",
    "fastmail.com",
    "proton.me",
    "hey.com",
];
const FIRST: [&str; 16] = [
    "Alice", "Bruno", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Keiko", "Liam", "Maya", "Noah", "Olga", "Priya",
];
const LAST: [&str; 16] = [
    "Anderson", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Hansen", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Petrov",
];
const COMPANIES: [&str; 10] = [
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Wonka",
    "Tyrell",
];
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];

/// Every contact of the tenant is numbered `0..contacts`.
pub struct Dataset {
    pub tenant: TenantId,
    pub contacts: u64,
    pub base: DateTime<Utc>,
}

/// Entries of the contact whose timeline is read by the timeline scenario.
pub const HOT_TIMELINE_ENTRIES: u64 = 10_000;

impl Dataset {
    pub fn new(tenant: TenantId, contacts: u64) -> Self {
        Self {
            tenant,
            contacts,
            base: kraiter_contacts::domain::now(),
        }
    }

    /// `con_` + a valid ULID whose time part is the contact's `created_at`, as the
    /// service makes them (so the `contact_id_floors` trigger never fires for a
    /// seeded row), and whose random part is the number in decimal. The time part is
    /// `time_prefix()` and then the number's seven decimal digits read as base-32
    /// digits (`created_at`), so ids and times both ascend with the number, and pgbench
    /// builds an id with two `lpad`s (`baseline::ID_SQL`) instead of a base-32
    /// conversion per call, which the service, binding a finished id, does not pay.
    pub fn id(&self, n: u64) -> String {
        format!("con_{}{n:07}{n:016}", self.time_prefix())
    }

    /// The first three characters of every seeded id's time part: a time a little
    /// over a year (2^35 ms) before `base`, so every `created_at` is in the past.
    pub fn time_prefix(&self) -> String {
        let ms = u64::try_from(self.base.timestamp_millis()).unwrap_or(0);
        let high = (ms >> 35).saturating_sub(1) << 35;
        ulid::Ulid::from_parts(high, 0).to_string()[..3].to_owned()
    }

    /// The largest dataset `id` can number (seven decimal digits).
    pub const MAX_CONTACTS: u64 = 10_000_000;
    pub fn email(n: u64) -> String {
        format!("user{n}@{}", DOMAINS[(n % 8) as usize])
    }

    /// SQL computing `email(n)` from pgbench variable `:n`.
    pub const EMAIL_SQL: &str = "('user' || :n || '@' || (ARRAY['gmail.com','yahoo.com','outlook.com','example.com','acme.io','fastmail.com','proton.me','hey.com'])[:n % 8 + 1])";

    /// The email of a contact a create scenario makes: `key` unique in the run, `tag`
    /// unique to the run. pgbench's creates build the same shape (`NEW_EMAIL_SQL`), so
    /// both put as many trigrams into the search index.
    pub fn new_email(key: &str, tag: &str) -> String {
        format!("n{key}.{tag}@example.com")
    }

    /// SQL computing `new_email` from pgbench variables `:k` and `:emailtag`.
    pub const NEW_EMAIL_SQL: &str = "('n' || :k || '.' || :emailtag || '@example.com')";

    /// A run's tag for `new_email`: eight random characters.
    pub fn new_email_tag() -> String {
        ulid::Ulid::new().to_string().to_lowercase()[18..].to_owned()
    }

    /// A customer reference unique to the contact: the rare search term.
    pub fn customer_ref(n: u64) -> String {
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut x = splitmix(n);
        let mut text = String::from("CR-");
        for _ in 0..8 {
            text.push(ALPHABET[(x & 31) as usize] as char);
            x >>= 5;
        }
        text
    }

    pub fn properties(n: u64) -> Map<String, Value> {
        let value = json!({
            "firstName": FIRST[(n % 16) as usize],
            "lastName": LAST[((n / 16) % 16) as usize],
            "company": COMPANIES[((n / 3) % 10) as usize],
            "plan": PLANS[(n % 4) as usize],
            "customerRef": Self::customer_ref(n),
            "score": n % 1000,
            "newsletter": n.is_multiple_of(3),
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object literal is an object"),
        }
    }

    /// The time `id(n)` carries: `time_prefix()`'s 35 high bits, then `n`'s seven
    /// decimal digits as base-32 digits (irregular steps of 1 to 23 ms between
    /// neighbours, ascending).
    pub fn created_at(&self, n: u64) -> DateTime<Utc> {
        let ms = u64::try_from(self.base.timestamp_millis()).unwrap_or(0);
        let mut low = 0u64;
        for digit in format!("{n:07}").bytes() {
            low = low * 32 + u64::from(digit - b'0');
        }
        let at = (((ms >> 35).saturating_sub(1)) << 35) + low;
        DateTime::from_timestamp_millis(at as i64).unwrap_or(self.base)
    }

    pub fn contact(&self, n: u64) -> Contact {
        let email = Email::parse(&Self::email(n), "email").expect("generated emails are valid");
        let properties = Properties::parse(Self::properties(n), "properties")
            .expect("generated properties are valid");
        let at = self.created_at(n);
        Contact {
            id: ContactId::from_trusted(self.id(n)),
            email,
            properties,
            suppressed: false,
            unsubscribed: false,
            created_at: at,
            updated_at: at,
            revision: 1,
        }
    }

    /// The `contact.created` entry, as CreateContact writes it.
    pub fn created_entry(contact: &Contact) -> TimelineEntry {
        contact_created(contact)
    }

    /// One contact in a hundred has been sent an email.
    pub fn has_send(n: u64) -> bool {
        n % 100 == 50
    }

    /// The send and its `email.sent` entry, as RecordSend writes them.
    pub fn send(&self, contact: &Contact) -> (SendRecord, TimelineEntry) {
        let new = NewSend {
            contact: ContactRef::Id(contact.id.clone()),
            template_id: "tpl_welcome".into(),
            template_name: "Welcome".into(),
            subject: "Welcome to Kraiter".into(),
            status: SendStatus::Sent,
            source: SendSource::Transactional,
            source_id: String::new(),
            scheduled_send_id: None,
            at: contact.created_at + Duration::seconds(5),
        };
        new.into_send(contact.id.clone(), contact.email.as_str().to_owned())
    }

    /// The contact whose timeline has `HOT_TIMELINE_ENTRIES` entries.
    pub fn hot_contact(&self) -> u64 {
        self.contacts / 2
    }

    /// The hot contact's extra entries: events and email activity over past months.
    pub fn hot_entry(&self, i: u64) -> TimelineEntry {
        let at = self.base - Duration::minutes((HOT_TIMELINE_ENTRIES - i) as i64 * 7);
        let (kind, data) = match i % 4 {
            0 => (
                "event",
                json!({"event_id": format!("evt_{:026}", i), "name": "page.viewed",
                       "properties": {"path": format!("/docs/page-{}", i % 50)}}),
            ),
            1 => (
                "email.sent",
                json!({"send_id": format!("snd_{:026}", i), "template_id": "tpl_digest",
                       "template_name": "Weekly digest", "subject": "Your week", "source": "campaign",
                       "source_id": "cmp_weekly"}),
            ),
            2 => (
                "email.opened",
                json!({"send_id": format!("snd_{:026}", i - 1), "template_id": "tpl_digest",
                       "template_name": "Weekly digest", "subject": "Your week", "source": "campaign",
                       "source_id": "cmp_weekly"}),
            ),
            _ => (
                "event",
                json!({"event_id": format!("evt_{:026}", i), "name": "feature.used",
                       "properties": {"feature": "export", "count": i}}),
            ),
        };
        let Value::Object(data) = data else {
            unreachable!("json! of an object literal is an object")
        };
        TimelineEntry::new(kind, at, data)
    }
}

/// A small fast PRNG (SplitMix64); the benchmark needs spread, not secrecy.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }
}
