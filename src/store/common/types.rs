//! Values stored differently by the two databases, bound and read through one type:
//! the shared SQL binds a `DbTime` and each database encodes it its own way.
//! PostgreSQL delegates to sqlx's own types (`timestamptz`, `jsonb`, `text[]`);
//! SQLite stores times as INTEGER microseconds since the Unix epoch and JSON as
//! TEXT (see `migrations/sqlite`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::types::Json;
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type};

/// The JSON objects the schema stores (properties, timeline data).
pub(crate) type JsonMap = serde_json::Map<String, serde_json::Value>;

type ArgsOf<'q, DB> = <DB as Database>::ArgumentBuffer<'q>;

/// A point in time. SQLite's microseconds out of chrono's range read as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DbTime(pub DateTime<Utc>);

/// A value serialized as JSON: bind `DbJson(&value)`, read `DbJson<T>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DbJson<T>(pub T);

/// JSON already serialized, kept as text: bind `JsonText(&str)`, read `JsonText`.
/// On PostgreSQL the `jsonb` binary form is the text after a version byte, so no
/// tree is built either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonText<S = String>(pub S);

/// A list of strings as a parameter, for `Dialect::any_of`: a `text[]` on
/// PostgreSQL, a JSON array (for `json_each`) on SQLite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextList<'a>(pub &'a [String]);

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'_, Postgres>) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Self)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'q, Sqlite>) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<Sqlite>>::encode(self.0.timestamp_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let micros = <i64 as Decode<Sqlite>>::decode(value)?;
        DateTime::from_timestamp_micros(micros)
            .map(Self)
            .ok_or_else(|| format!("timestamp {micros} out of range").into())
    }
}

impl<T> Type<Postgres> for DbJson<T> {
    fn type_info() -> PgTypeInfo {
        <Json<T> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<T> as Type<Postgres>>::compatible(ty)
    }
}

impl<T: Serialize> Encode<'_, Postgres> for DbJson<T> {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'_, Postgres>) -> Result<IsNull, BoxDynError> {
        <Json<&T> as Encode<Postgres>>::encode_by_ref(&Json(&self.0), buf)
    }
}

impl<'r, T: DeserializeOwned> Decode<'r, Postgres> for DbJson<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let Json(value) = <Json<T> as Decode<Postgres>>::decode(value)?;
        Ok(Self(value))
    }
}

impl<T> Type<Sqlite> for DbJson<T> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q, T: Serialize> Encode<'q, Sqlite> for DbJson<T> {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'q, Sqlite>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(&self.0)?, buf)
    }
}

impl<'r, T: DeserializeOwned> Decode<'r, Sqlite> for DbJson<T> {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(serde_json::from_str(text)?))
    }
}

/// `jsonb` only: its binary form is the one whose layout `JsonText` reads.
impl<S> Type<Postgres> for JsonText<S> {
    fn type_info() -> PgTypeInfo {
        <Json<()> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        *ty == <Self as Type<Postgres>>::type_info()
    }
}

/// Version 1 of `jsonb`'s binary form is a version byte and then the JSON text;
/// PostgreSQL parses (and so checks) the text on receipt.
impl Encode<'_, Postgres> for JsonText<&str> {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'_, Postgres>) -> Result<IsNull, BoxDynError> {
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

impl<'r> Decode<'r, Postgres> for JsonText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let format = value.format();
        let bytes = value.as_bytes()?;
        let text = match (format, bytes.split_first()) {
            (PgValueFormat::Text, _) => bytes,
            (PgValueFormat::Binary, Some((1, text))) => text,
            (PgValueFormat::Binary, _) => return Err("unknown jsonb format version".into()),
        };
        Ok(Self(std::str::from_utf8(text)?.to_owned()))
    }
}

impl<S> Type<Sqlite> for JsonText<S> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for JsonText<&'q str> {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'q, Sqlite>) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Sqlite>>::encode(self.0, buf)
    }
}

impl<'r> Decode<'r, Sqlite> for JsonText {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        <String as Decode<Sqlite>>::decode(value).map(Self)
    }
}

impl Type<Postgres> for TextList<'_> {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for TextList<'_> {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'_, Postgres>) -> Result<IsNull, BoxDynError> {
        <&[String] as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Sqlite> for TextList<'_> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for TextList<'_> {
    fn encode_by_ref(&self, buf: &mut ArgsOf<'q, Sqlite>) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(self.0)?, buf)
    }
}

#[cfg(test)]
mod tests {
    //! Round trips through a real (in-memory) SQLite; PostgreSQL's encodings are
    //! sqlx's own, which the integration tests run.

    use chrono::{DateTime, TimeZone, Utc};
    use sqlx::{Connection, Row, Sqlite, SqliteConnection};

    use super::{DbJson, DbTime, JsonMap, JsonText, TextList};
    use crate::store::common::Stmt;

    async fn table() -> SqliteConnection {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (at INTEGER, maybe INTEGER, data TEXT, raw TEXT) STRICT")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }

    #[tokio::test]
    async fn times_are_stored_as_microseconds_and_read_back() {
        let mut conn = table().await;
        let at = Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap();
        Stmt::<Sqlite>::new("INSERT INTO t (at, maybe) VALUES ($1, $2)")
            .bind(DbTime(at))
            .bind(None::<DbTime>)
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::query("SELECT at, maybe FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<i64, _>("at"), at.timestamp_micros());
        assert_eq!(row.get::<DbTime, _>("at"), DbTime(at));
        assert_eq!(row.get::<Option<DbTime>, _>("maybe"), None);
    }

    #[tokio::test]
    async fn a_time_out_of_range_is_an_error_not_a_value() {
        let mut conn = table().await;
        sqlx::query("INSERT INTO t (at) VALUES ($1)")
            .bind(i64::MAX)
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::query("SELECT at FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let read = row.try_get::<DbTime, _>("at");
        assert!(read.is_err(), "read {read:?}");
        assert!(DateTime::from_timestamp_micros(i64::MAX).is_none());
    }

    #[tokio::test]
    async fn json_is_stored_as_text_and_read_back() {
        let mut conn = table().await;
        let map: JsonMap = serde_json::from_str(r#"{"plan":"pro","n":[1,2.5,null]}"#).unwrap();
        let raw = r#"{"id": "con_1"}"#;
        Stmt::<Sqlite>::new("INSERT INTO t (data, raw) VALUES ($1, $2)")
            .bind(DbJson(&map))
            .bind(JsonText(raw))
            .execute(&mut conn)
            .await
            .unwrap();
        let row = sqlx::query("SELECT data, raw FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            row.get::<String, _>("data"),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(row.get::<DbJson<JsonMap>, _>("data"), DbJson(map));
        assert_eq!(row.get::<JsonText, _>("raw"), JsonText(raw.to_owned()));
        assert_eq!(
            row.get::<Option<JsonText>, _>("raw"),
            Some(JsonText(raw.to_owned()))
        );
    }

    #[tokio::test]
    async fn a_text_list_is_a_json_array_for_json_each() {
        let mut conn = table().await;
        let types = vec!["a".to_owned(), "b\"c|".to_owned()];
        let row = Stmt::<Sqlite>::new("SELECT group_concat(value, '/') AS v FROM json_each($1)")
            .bind(TextList(&types))
            .fetch_optional(&mut conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.get::<String, _>("v"), "a/b\"c|");
    }
}
